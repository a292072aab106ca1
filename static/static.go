// Package static holds the dashboard's stylesheet and script, embedded in
// the binary: nothing is fetched from elsewhere (no fonts, no CDN), so the
// dashboard works on a machine with no outside network.
package static

import "embed"

// FS holds dashboard.css and dashboard.js.
//
//go:embed dashboard.css dashboard.js
var FS embed.FS
