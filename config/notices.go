package config

// ServerNotices is Synapse's server_notices: the system account that sends
// notices from the admin API (POST /_synapse/admin/v1/send_server_notice)
// into a room of each recipient's own. Notices are off until
// system_mxid_localpart is set.
type ServerNotices struct {
	SystemMXIDLocalpart   string `yaml:"system_mxid_localpart"`
	SystemMXIDDisplayName string `yaml:"system_mxid_display_name"`
	SystemMXIDAvatarURL   string `yaml:"system_mxid_avatar_url"`
	RoomName              string `yaml:"room_name"`
}

// Enabled reports whether server notices are configured.
func (n ServerNotices) Enabled() bool { return n.SystemMXIDLocalpart != "" }

// Name is the notices room's name (Synapse's default "Server Notices").
func (n ServerNotices) Name() string {
	if n.RoomName == "" {
		return "Server Notices"
	}
	return n.RoomName
}
