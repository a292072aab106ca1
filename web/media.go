package web

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"hearth/server/htmlpage"
	"hearth/server/storage"
	"hearth/templates"
)

// The media page: totals, the largest uploaders, and the local media store
// with quarantine, protect and delete, through the media admin API's
// operations (server/admin_media.go). A room's media is on its page.

const mediaPerPage = 50

// mediaQuery is the media page's query string.
type mediaQuery struct {
	User, Sort string
	Desc       bool
	Page       int
}

var mediaSorts = []struct{ Key, Label string }{
	{"media_id", "File"}, {"media_length", "Size"}, {"created_ts", "Uploaded"}, {"last_access_ts", "Last access"},
}

func parseMediaQuery(v url.Values) mediaQuery {
	// Newest first unless asked otherwise.
	q := mediaQuery{User: strings.TrimSpace(v.Get("user")), Sort: "created_ts", Desc: v.Get("dir") != "asc", Page: 1}
	for _, s := range mediaSorts {
		if v.Get("sort") == s.Key {
			q.Sort = s.Key
		}
	}
	if p, err := strconv.Atoi(v.Get("page")); err == nil && p > 1 {
		q.Page = p
	}
	return q
}

func (q mediaQuery) url(prefix string, edit func(*mediaQuery)) string {
	if edit != nil {
		edit(&q)
	}
	v := url.Values{}
	if q.User != "" {
		v.Set("user", q.User)
	}
	if q.Sort != "created_ts" {
		v.Set("sort", q.Sort)
	}
	if !q.Desc {
		v.Set("dir", "asc")
	}
	if q.Page > 1 {
		v.Set("page", strconv.Itoa(q.Page))
	}
	if len(v) == 0 {
		return prefix + "/media"
	}
	return prefix + "/media?" + v.Encode()
}

// mediaTotals are the media page's counts: local media, and the cache
// of other servers' media.
type mediaTotals struct {
	Count, Bytes             int64
	RemoteCount, RemoteBytes int64
}

func newMediaVM(c templates.Chrome, q mediaQuery, rows []*storage.Media, total int, usage []storage.MediaUsage,
	t mediaTotals, now time.Time) templates.MediaVM {
	vm := templates.MediaVM{Chrome: c, User: q.User, Back: q.url("", nil)}
	vm.Totals = []templates.Stat{
		{Label: "Files", Value: thousands(t.Count), Available: true},
		{Label: "Stored", Value: humanBytes(uint64(max(t.Bytes, 0))), Available: true},
		{Label: "Cached from other servers", Value: thousands(t.RemoteCount), Available: true,
			Note: humanBytes(uint64(max(t.RemoteBytes, 0)))},
	}
	for _, u := range usage {
		vm.Usage = append(vm.Usage, templates.MediaUsageVM{UserID: u.UserID, Count: thousands(u.Count), Size: humanBytes(uint64(max(u.Bytes, 0))),
			URL: q.url(c.Prefix, func(n *mediaQuery) { n.User, n.Page = u.UserID, 1 })})
	}
	for _, s := range mediaSorts {
		active := q.Sort == s.Key
		vm.Sort = append(vm.Sort, templates.SortLink{Label: s.Label, Active: active, Desc: active && q.Desc,
			URL: q.url(c.Prefix, func(n *mediaQuery) { n.Sort, n.Desc, n.Page = s.Key, !(active && q.Desc), 1 })})
	}
	for _, m := range rows {
		vm.Rows = append(vm.Rows, templates.MediaRowVM{MediaID: m.MediaID, MXC: "mxc://" + c.ServerName + "/" + m.MediaID,
			Uploader: m.UserID, UploaderURL: q.url(c.Prefix, func(n *mediaQuery) { n.User, n.Page = m.UserID, 1 }),
			Type: m.ContentType, Size: humanBytes(uint64(max(m.Size, 0))), Name: m.UploadName,
			Uploaded: humanTime(m.CreatedTS, now), LastAccess: humanTimeOr(m.LastAccessTS, now, "never"),
			Quarantined: m.QuarantinedBy != "", Protected: m.Protected})
	}
	from := (q.Page - 1) * mediaPerPage
	switch {
	case total == 0:
		vm.Showing = "No media"
	case len(rows) == 0:
		vm.Showing = fmt.Sprintf("Nothing on page %d of %s files", q.Page, thousands(int64(total)))
	default:
		vm.Showing = fmt.Sprintf("%s–%s of %s files", thousands(int64(from+1)), thousands(int64(from+len(rows))), thousands(int64(total)))
	}
	if q.User != "" {
		vm.Showing += " uploaded by " + q.User
	}
	if q.Page > 1 {
		vm.PrevURL = q.url(c.Prefix, func(n *mediaQuery) { n.Page-- })
	}
	if from+len(rows) < total {
		vm.NextURL = q.url(c.Prefix, func(n *mediaQuery) { n.Page++ })
	}
	return vm
}

// GET /_hearth/admin/media?user=&sort=&dir=&page=
func (d *Dashboard) getMedia(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := parseMediaQuery(r.URL.Query())
	if q.User != "" {
		userID, err := d.srv.LocalUserID(q.User)
		if err != nil {
			return err
		}
		q.User = userID
	}
	rows, total, err := d.srv.ListMedia(ctx, storage.MediaFilter{UserID: q.User, From: (q.Page - 1) * mediaPerPage, Limit: mediaPerPage,
		OrderBy: q.Sort, Desc: q.Desc})
	if err != nil {
		return err
	}
	usage, _, err := d.srv.MediaUsage(ctx, storage.MediaUsageFilter{Limit: 10, OrderBy: "media_length", Desc: true})
	if err != nil {
		return err
	}
	var t mediaTotals
	if t.Count, t.Bytes, err = d.srv.MediaTotals(ctx); err != nil {
		return err
	}
	if t.RemoteCount, t.RemoteBytes, err = d.srv.RemoteMediaTotals(ctx); err != nil {
		return err
	}
	vm := newMediaVM(d.chrome(w, r, "Media", "media"), q, rows, total, usage, t, d.srv.Now())
	d.pages.Render(w, r, http.StatusOK, templates.Media(vm))
	return nil
}

// mediaParam reads {mediaID} and checks the item exists.
func (d *Dashboard) mediaParam(r *http.Request) (string, error) {
	id, err := pathParam(r, "mediaID")
	if err != nil {
		return "", &htmlpage.Error{Status: http.StatusBadRequest, Msg: "That is not a media ID."}
	}
	if _, err := d.srv.MediaInfo(r.Context(), id); err != nil {
		return "", err
	}
	return id, nil
}

// mediaBack is where a media form returns: the list it came from.
func (d *Dashboard) mediaBack(r *http.Request) string {
	back := r.PostFormValue("back")
	if !strings.HasPrefix(back, "/media") || strings.HasPrefix(back, "//") {
		return "/media"
	}
	return back
}

// POST /_hearth/admin/media/{mediaID}/quarantine
func (d *Dashboard) postMediaQuarantine(w http.ResponseWriter, r *http.Request) error {
	id, err := d.mediaParam(r)
	if err != nil {
		return err
	}
	quarantine := r.PostFormValue("quarantine") == "1"
	if quarantine && !d.confirmed(w, r, templates.ConfirmVM{Heading: "Quarantine " + id + "?",
		Message: "Nobody will be able to download it until it is released.", Button: "Quarantine",
		Cancel: d.prefix + d.mediaBack(r)}) {
		return nil
	}
	if _, err := d.srv.QuarantineMedia(r.Context(), d.actor(r), []string{id}, quarantine); err != nil {
		return err
	}
	msg := "Released " + id + "."
	if quarantine {
		msg = "Quarantined " + id + "."
	}
	return d.redirect(w, r, d.mediaBack(r), msg, false)
}

// POST /_hearth/admin/media/{mediaID}/protect
func (d *Dashboard) postMediaProtect(w http.ResponseWriter, r *http.Request) error {
	id, err := d.mediaParam(r)
	if err != nil {
		return err
	}
	protect := r.PostFormValue("protect") == "1"
	if err := d.srv.ProtectMedia(r.Context(), d.actor(r), id, protect); err != nil {
		return err
	}
	msg := id + " is no longer protected."
	if protect {
		msg = id + " is protected from quarantine and clean-ups."
	}
	return d.redirect(w, r, d.mediaBack(r), msg, false)
}

// POST /_hearth/admin/media/{mediaID}/delete
func (d *Dashboard) postMediaDelete(w http.ResponseWriter, r *http.Request) error {
	id, err := d.mediaParam(r)
	if err != nil {
		return err
	}
	if !d.confirmed(w, r, templates.ConfirmVM{Heading: "Delete " + id + "?",
		Message: "The file and its thumbnails are removed from the media store. Messages that show it will show nothing. This cannot be undone.",
		Button:  "Delete file", Cancel: d.prefix + d.mediaBack(r)}) {
		return nil
	}
	if _, err := d.srv.DeleteMedia(r.Context(), d.actor(r), []string{id}); err != nil {
		return err
	}
	return d.redirect(w, r, d.mediaBack(r), "Deleted "+id+".", false)
}

// POST /_hearth/admin/media/cleanup
//
// Deletes local media last used before `days` ago (optionally only files
// larger than size_mib), through the same code as the admin API's
// /v1/media/delete, or cleans the cache of other servers' media of what
// was not downloaded in as long (the admin API's purge_media_cache). The
// cache clean-up asks no confirmation: what it removes is fetched again
// when next asked for.
func (d *Dashboard) postMediaCleanup(w http.ResponseWriter, r *http.Request) error {
	days, err := strconv.Atoi(r.PostFormValue("days"))
	if err != nil || days < 1 {
		return &htmlpage.Error{Status: http.StatusBadRequest, Msg: "Give a number of days, 1 or more."}
	}
	sizeMiB := 0
	if v := r.PostFormValue("size_mib"); v != "" {
		if sizeMiB, err = strconv.Atoi(v); err != nil || sizeMiB < 0 {
			return &htmlpage.Error{Status: http.StatusBadRequest, Msg: "The size must be a whole number of MiB, 0 or more."}
		}
	}
	if r.PostFormValue("scope") == "remote" {
		before := d.srv.Now().Add(-time.Duration(days) * 24 * time.Hour).UnixMilli()
		n, err := d.srv.PurgeRemoteMedia(r.Context(), d.actor(r), before)
		if err != nil {
			return err
		}
		return d.redirect(w, r, "/media", fmt.Sprintf("Removed %d file(s) from the cache of other servers' media.", n), false)
	}
	keep := r.PostFormValue("keep_profiles") == "1"
	what := fmt.Sprintf("every file last used more than %d days ago", days)
	if sizeMiB > 0 {
		what += fmt.Sprintf(" and larger than %d MiB", sizeMiB)
	}
	if !d.confirmed(w, r, templates.ConfirmVM{Heading: "Delete old media?",
		Message: "This deletes " + what + " from the media store, except protected files" +
			map[bool]string{true: " and avatars", false: ""}[keep] + ". Messages that show them will show nothing. This cannot be undone.",
		Button: "Delete files", Cancel: d.prefix + "/media"}) {
		return nil
	}
	before := d.srv.Now().Add(-time.Duration(days) * 24 * time.Hour).UnixMilli()
	deleted, err := d.srv.DeleteMediaBefore(r.Context(), d.actor(r), before, int64(sizeMiB)<<20, keep)
	if err != nil {
		return err
	}
	return d.redirect(w, r, "/media", fmt.Sprintf("Deleted %d files.", len(deleted)), false)
}

// POST /_hearth/admin/rooms/{roomID}/media/quarantine
func (d *Dashboard) postRoomMediaQuarantine(w http.ResponseWriter, r *http.Request) error {
	roomID, err := d.roomParam(r)
	if err != nil {
		return err
	}
	if !d.confirmed(w, r, templates.ConfirmVM{Heading: "Quarantine the media of " + roomID + "?",
		Message: "Every file that the room's messages refer to becomes undownloadable: this server's, except protected ones, and the copies of other servers' files this server keeps.",
		Button:  "Quarantine", Cancel: roomURL(d.prefix, roomID)}) {
		return nil
	}
	n, err := d.srv.QuarantineRoomMedia(r.Context(), d.actor(r), roomID)
	if err != nil {
		return err
	}
	d.setFlash(w, r, fmt.Sprintf("Quarantined %d file(s).", n), false)
	http.Redirect(w, r, roomURL(d.prefix, roomID), http.StatusSeeOther)
	return nil
}

// roomMediaVM lists a room's media for its page.
func (d *Dashboard) roomMediaVM(r *http.Request, roomID string) (templates.RoomMediaVM, error) {
	local, remote, err := d.srv.RoomMedia(r.Context(), roomID)
	return templates.RoomMediaVM{Local: local, Remote: remote}, err
}
