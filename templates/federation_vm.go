package templates

// View models of the federation pages (federation.templ).

// Health is a destination's state as the pages show it.
type Health struct {
	// Label is "healthy", "failing" or "no delivery yet".
	Label   string
	Failing bool
	OK      bool   // healthy: the last transaction got through
	Since   string // failing: "for 2h 5m"
	Retry   string // failing: "next retry in 8m", "retrying now"
	Error   string // failing: the last error, shortened on the list
}

// HeaderVM is a column header; with a URL it sorts the list.
type HeaderVM struct {
	Label, URL string
	Active     bool
	Desc       bool
}

// DestinationRowVM is one server on the federation page.
type DestinationRowVM struct {
	Name, DetailURL string
	Health          Health
	LastDelivery    string // "5 min ago", "never"
	Behind          string // "up to date", "12 events in 2 rooms"
	IsBehind        bool
	Rooms           string
	CanRetry        bool // backing off: "retry now" has something to do
}

// FederationVM is the federation page: every server this one sends to.
type FederationVM struct {
	Chrome
	Query      string
	Federating bool
	Totals     []Stat
	Headers    []HeaderVM
	Rows       []DestinationRowVM
	Showing    string
	PrevURL    string
	NextURL    string
	Back       string // this page with its query, for the retry forms
}

// DestinationRoomVM is a room this server shares with a destination.
type DestinationRoomVM struct {
	RoomID, Name, URL string
	Known             bool   // false: the room is gone from this server
	Members           string // "2 joined", "none joined now"
	Queued            string // the newest event queued there, a stream position
	Waiting           bool   // that event is not delivered yet
}

// DestinationVM is one destination's page.
type DestinationVM struct {
	Chrome
	Name       string
	BaseURL    string // the destination's page, for its form
	Back       string // the same without the prefix, where the form returns
	Federating bool
	Health     Health
	CanRetry   bool
	Facts      []Fact
	Rooms      []DestinationRoomVM
	Showing    string
	PrevURL    string
	NextURL    string
}
