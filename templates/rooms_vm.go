package templates

// View models of the rooms and reports pages (rooms.templ).

// RoomRowVM is one line of the room list.
type RoomRowVM struct {
	RoomID, Name, Alias, DetailURL string
	Members, LocalMembers          string
	Version, StateEvents           string
	Public, Encrypted, Blocked     bool
}

// RoomsVM is the room list.
type RoomsVM struct {
	Chrome
	Query   string
	Sort    []SortLink
	Rows    []RoomRowVM
	Showing string
	PrevURL string
	NextURL string
}

// Fact is a labelled value on a details page.
type Fact struct {
	Label, Value string
}

// MemberVM is one member of a room.
type MemberVM struct {
	UserID, Membership, UserURL string
}

// StateRowVM is one current state event.
type StateRowVM struct {
	Type, StateKey, Sender, Content string
}

// DeleteRowVM is one deletion of a room.
type DeleteRowVM struct {
	DeleteID, Status, Started, URL string
}

// RoomDetailVM is one room's page.
type RoomDetailVM struct {
	Chrome
	RoomID, Name, Topic string
	BaseURL             string // the room's page, for its forms
	Facts               []Fact
	Blocked             bool
	BlockedBy           string
	Known               bool // false: only a block or a deletion record remains
	Members             []MemberVM
	Servers             []string
	State               []StateRowVM
	Deletes             []DeleteRowVM
	Media               RoomMediaVM
}

// DeleteStatusVM is the progress of one room deletion.
type DeleteStatusVM struct {
	Chrome
	DeleteID, RoomID, RoomURL string
	Status, Explanation       string
	Error                     string
	Done                      bool
	Kicked, Aliases           []string
	Steps                     []DeleteStepVM
}

// DeleteStepVM is one step of a deletion, for the progress list.
type DeleteStepVM struct {
	Label string
	State string // done, active, pending, failed
}

// ReportRowVM is one event report.
type ReportRowVM struct {
	ID, When, RoomID, RoomName, RoomURL string
	EventID, Reporter, Sender           string
	Reason, Score, Body                 string
}

// ReportsVM is the reports page.
type ReportsVM struct {
	Chrome
	Rows    []ReportRowVM
	Showing string
	PrevURL string
	NextURL string
}
