// Package templates holds the admin dashboard's templ components and the
// view models they take. Handlers in package web build the view models (and
// unit tests check the constructors); components only lay them out, so no
// formatting or database access happens while rendering.
package templates

// Chrome is what every signed-in page needs: the navigation, the signed-in
// admin, the form token, and a one-shot message from the previous action.
type Chrome struct {
	Title      string
	Prefix     string // e.g. "/_hearth/admin"
	ServerName string
	Admin      string // signed-in user ID; "" on the sign-in and error pages
	CSRF       string
	Active     string // nav item: one of Nav's IDs
	Flash      string
	FlashError bool
	Version    string
	// Refresh, when positive, reloads the page after that many seconds
	// (progress pages; a meta refresh works without JavaScript).
	Refresh int
}

// URL joins the dashboard prefix and a path.
func (c Chrome) URL(path string) string { return c.Prefix + path }

// NavItem is one navigation link.
type NavItem struct {
	ID, Label, Path string
}

// Nav is the navigation.
var Nav = []NavItem{
	{"overview", "Overview", "/"},
	{"users", "Users", "/users"},
	{"rooms", "Rooms", "/rooms"},
	{"federation", "Federation", "/federation"},
	{"reports", "Reports", "/reports"},
	{"media", "Media", "/media"},
	{"registration", "Registration", "/registration"},
	{"caches", "Caches & memory", "/caches"},
	{"diagnostics", "Diagnostics", "/diagnostics"},
	{"fedtest", "Federation tester", "/federation-test"},
	{"audit", "Audit log", "/audit"},
}

// LoginVM is the sign-in page.
type LoginVM struct {
	Chrome
	Username string
	Error    string
}

// SetupVM is the first-run page.
type SetupVM struct {
	Chrome
	Action   string // where the form posts (the setup path)
	Token    string
	Username string
	Error    string
}

// Stat is one number on the overview. When Available is false the value
// does not exist yet (the feature that would count it is not built) and
// Note says so; no number is shown.
type Stat struct {
	Label     string
	Value     string
	Available bool
	Note      string
}

// OverviewVM is the overview page.
type OverviewVM struct {
	Chrome
	Version  string
	Uptime   string
	Engine   string
	Counts   []Stat // users, rooms, events, media
	Activity []Stat // events per second
	Memory   []Stat // RSS, heap, GC
	Runtime  []Stat // goroutines, database size
	// BackupNote says what the backup button's archive holds.
	BackupNote string
}

// UserRowVM is one line of the user list.
type UserRowVM struct {
	UserID, DisplayName, Created, LastSeen, DetailURL string
	Admin, Deactivated, Guest, Locked                 bool
}

// SortLink is a column header that sorts the list.
type SortLink struct {
	Label, URL string
	Active     bool
	Desc       bool
}

// UsersVM is the user list.
type UsersVM struct {
	Chrome
	Query           string
	ShowDeactivated bool
	Sort            []SortLink
	Rows            []UserRowVM
	Total           int
	Showing         string // "1–50 of 120"
	PrevURL         string // "" on the first page
	NextURL         string // "" on the last page
}

// DeviceVM is one of a user's devices (a session).
type DeviceVM struct {
	DeviceID, DisplayName, LastSeen, LastSeenIP, UserAgent string
}

// UserVM is one user's page.
type UserVM struct {
	Chrome
	UserID, DisplayName, Created, LastSeen, UserType string
	Admin, Deactivated, Erased, Locked, Guest        bool
	Self                                             bool // the signed-in admin
	Devices                                          []DeviceVM
	Rooms                                            []RoomVM // joined and invited
	BaseURL                                          string   // the user's page, for its forms
}

// RoomVM is a room a user is in or invited to.
type RoomVM struct {
	RoomID, Membership string
	URL                string // the room's page
}

// RegTokenVM is one registration token.
type RegTokenVM struct {
	Token, Uses, Expires string
	Valid                bool
}

// RegistrationVM is the registration page.
type RegistrationVM struct {
	Chrome
	Enabled, RequiresToken, WithoutVerification bool
	CanSave                                     bool // the config came from a file the dashboard can edit
	Tokens                                      []RegTokenVM
	NewToken                                    string // the token just created, shown once in full
	TokenHint                                   string
}

// CacheRowVM is one cache.
type CacheRowVM struct {
	Name, Description                   string
	Size, Capacity, BaseSize, Evictions string
	Bytes                               string // approximate memory held
	HitRate                             string
	Factor                              string
	FillPercent                         int // 0-100, for the bar
}

// BufferRowVM is one buffer (a queue, a pool) on the caches page.
type BufferRowVM struct {
	Name, Description string
	Entries           string
	Bytes             string // "—" when unknown
}

// PresetVM is a memory preset.
type PresetVM struct {
	ID, Name, Description string
}

// ChartVM is a server-rendered line chart of memory over time. Coordinates
// are in the SVG's own units (Width × Height).
type ChartVM struct {
	Width, Height int
	// Lines are polylines: points as "x,y x,y ...".
	Lines []ChartLine
	// YLabels mark the vertical axis; XLabels the horizontal.
	YLabels []ChartLabel
	XLabels []ChartLabel
	Empty   string // shown instead of the chart when there is nothing to draw
}

// ChartLine is one series.
type ChartLine struct {
	Name, Class, Points string
	Latest              string
}

// ChartLabel is an axis label at a position.
type ChartLabel struct {
	X, Y int
	Text string
}

// CachesVM is the caches and memory page.
type CachesVM struct {
	Chrome
	GlobalFactor string
	Caches       []CacheRowVM
	MemoryLimit  string // as typed in the config: "400M", "0" for none
	GCPercent    string
	Presets      []PresetVM
	Chart        ChartVM
	Persisted    string // where changes are saved, or why they are not
	CanSave      bool
	Memory       []Stat
	Buffers      []BufferRowVM
	// CacheBytes is the sum of the caches' approximate bytes.
	CacheBytes string
}

// AuditRowVM is one audit entry.
type AuditRowVM struct {
	When, Actor, Action, Target, Detail, IP string
}

// AuditVM is the audit log page.
type AuditVM struct {
	Chrome
	Rows    []AuditRowVM
	Showing string
	PrevURL string
	NextURL string
}

// Field is a hidden form field carried through a confirmation.
type Field struct {
	Name, Value string
}

// ConfirmVM asks before a destructive action. Submitting the form repeats
// the original POST with confirmed=yes; without JavaScript this is a page
// of its own.
type ConfirmVM struct {
	Chrome
	Heading string
	Message string
	Action  string // form action
	Fields  []Field
	Button  string
	Cancel  string // URL to go back to
}

// ErrorVM is the error page.
type ErrorVM struct {
	Chrome
	Status  int
	Heading string
	Message string
	Back    string
}

// NotAvailableVM is the page for areas that do not exist yet.
type NotAvailableVM struct {
	Chrome
	Heading string
	Message string
}

// SetupStepVM is one step of the first-run walk-through after the admin
// exists (setup.templ): the server name, the certificates, the checks.
type SetupStepVM struct {
	Chrome
	// Step is "name", "certificates" or "checks".
	Step       string
	ConfigPath string // the config file; "" when not read from a file
	// Accounts counts the accounts ("1 account"): the server name is
	// fixed once there are any.
	Accounts string
	// Listeners are the ports and whether each serves TLS, e.g.
	// "8008, 8448 (TLS)".
	Listeners string
	// CertFile and KeyFile are tls_certificate_path and tls_private_key_path.
	CertFile, KeyFile string
	CertsVM
	// ACMEDomains are the names ACME asks certificates for ("a, b").
	ACMEDomains string
	// The checks' results once run: the doctor's own findings, then the
	// federation test of this server's name.
	Doctor     DoctorVM
	Federation FedResultVM
}

// SetupSteps are the walk-through's steps in order, after "Admin".
var SetupSteps = []NavItem{
	{"name", "Server name", "/setup/name"},
	{"certificates", "Certificates", "/setup/certificates"},
	{"checks", "Checks", "/setup/checks"},
}
