package rooms

// Event types and membership values the auth rules refer to.
const (
	TypeCreate           = "m.room.create"
	TypeMember           = "m.room.member"
	TypePowerLevels      = "m.room.power_levels"
	TypeJoinRules        = "m.room.join_rules"
	TypeThirdPartyInvite = "m.room.third_party_invite"
	TypeHistoryVis       = "m.room.history_visibility"
	TypeGuestAccess      = "m.room.guest_access"
	TypeRedaction        = "m.room.redaction"
	TypeAliases          = "m.room.aliases"
	TypeName             = "m.room.name"
	TypeTopic            = "m.room.topic"
	TypeCanonicalAlias   = "m.room.canonical_alias"
	TypeEncryption       = "m.room.encryption"

	MembershipJoin   = "join"
	MembershipInvite = "invite"
	MembershipLeave  = "leave"
	MembershipBan    = "ban"
	MembershipKnock  = "knock"

	JoinRulePublic          = "public"
	JoinRuleInvite          = "invite"
	JoinRuleKnock           = "knock"
	JoinRuleRestricted      = "restricted"
	JoinRuleKnockRestricted = "knock_restricted"
	JoinRulePrivate         = "private"
)
