package templates

// View models of the media page (media.templ).

// MediaRowVM is one uploaded file.
type MediaRowVM struct {
	MediaID, MXC, Uploader, UploaderURL string
	Type, Size, Name                    string
	Uploaded, LastAccess                string
	Quarantined, Protected              bool
}

// MediaUsageVM is one user's share of the media store.
type MediaUsageVM struct {
	UserID, URL, Count, Size string
}

// MediaVM is the media page.
type MediaVM struct {
	Chrome
	User    string // filter: one uploader's media; "" for all
	Totals  []Stat
	Usage   []MediaUsageVM
	Sort    []SortLink
	Rows    []MediaRowVM
	Showing string
	PrevURL string
	NextURL string
	Back    string // this page with its query, for the forms to return to
}

// RoomMediaVM is the media a room's events refer to.
type RoomMediaVM struct {
	Local, Remote []string
}
