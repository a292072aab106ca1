package web

import (
	"fmt"
	"net/http"
	"regexp"

	"hearth/appliance/backup"
	"hearth/server"
)

// POST /_hearth/admin/backup
//
// Streams the same archive hearth backup writes (appliance/backup) as a
// download. Nothing is written until the database snapshot is done, so a
// failed snapshot still gets an error page; a failure later cuts the
// archive short, and restore refuses an archive without its manifest.
func (d *Dashboard) postBackup(w http.ResponseWriter, r *http.Request) error {
	cfg := d.srv.Config()
	now := d.srv.Now()
	name := fmt.Sprintf("hearth-%s-%s.tar.gz", fileSafe.ReplaceAllString(cfg.ServerName, "_"), now.UTC().Format("20060102-150405"))
	cw := &countingWriter{w: w}
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	// The store's own database, which is the config's except in tests.
	m, err := backup.Write(r.Context(), cfg, cw, backup.Options{Version: server.Version, Now: d.srv.Now,
		Engine: d.store.Engine(), SQLitePath: d.store.SQLitePath()})
	if err != nil {
		if cw.n == 0 {
			w.Header().Del("Content-Disposition")
			return err
		}
		d.srv.Log().Error("dashboard: backup cut short", "err", err)
		return nil
	}
	d.srv.Audit(r.Context(), d.actor(r), "dashboard.backup", "", fmt.Sprintf("%s, %d media files", m.Engine, m.MediaFiles()))
	return nil
}

var fileSafe = regexp.MustCompile(`[^A-Za-z0-9.-]`)

// countingWriter counts what has gone to the client.
type countingWriter struct {
	w http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}
