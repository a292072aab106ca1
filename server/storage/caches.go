package storage

import (
	"unsafe"

	"hearth/server/cache"
)

// Base sizes at cache factor 1. A session entry is ~200 bytes and a user
// ~300, so at factor 1 both together stay under 10 MB.
const (
	tokenCacheBase = 20_000
	userCacheBase  = 20_000
	// A state group's map costs about 100 bytes per entry; most groups of
	// a small server hold tens of entries.
	stateGroupCacheBase = 2_000
	// Current state: one entry per active room.
	currentStateCacheBase = 1_000
	// Push rules: one entry per local user in an active room (the push
	// evaluator reads every member's for every event).
	pushRulesCacheBase = 10_000
	// Memberships at a state group: one entry (~100 bytes) per (group,
	// user) that events are served for.
	membershipAtCacheBase = 20_000
	// notifTotalsCacheBase: one entry per read receipt of a thread with
	// unread notifications, of the users syncing.
	notifTotalsCacheBase = 20_000
	// Thread heads: one entry (~100 bytes a member) per (room, thread)
	// notified in since the last flush of notifications.
	threadHeadsCacheBase  = 1_000
	threadHeadsCacheBytes = 4 << 20
	// Rooms of a user: one entry (~150 bytes a room) per user syncing.
	roomsOfUserCacheBase = 10_000
	// Unread bases: one entry (~100 bytes per receipt and per thread with
	// notifications) per user syncing.
	unreadCacheBase = 10_000
	// Per device syncing: its key counts and whether its to-device queue
	// is empty; per user: their global account data entries read by /sync.
	deviceCacheBase      = 10_000
	accountDataCacheBase = 10_000
	// Fresh events: this server's newest events (UnrelatedAt), which the
	// /sync answers they wake read at once.
	freshUnrelatedCacheBase = 2_000
	// A room's state is a few entries or many thousands: the state caches
	// are bounded in bytes too (cache.LRU.WithMaxBytes), so that a server
	// in large rooms keeps fewer of them instead of its count's worth of
	// the largest.
	stateGroupCacheBytes   = 16 << 20
	currentStateCacheBytes = 8 << 20
)

// caches are the Store's read-through caches. Every write that can change
// what they hold invalidates them after its transaction (see userChanged and
// tokensRevoked); the LRU's generation check keeps a read that raced the
// write from putting the old row back.
type caches struct {
	// sessions maps HashToken(access token) to its session: every
	// authenticated request looks its token up.
	sessions *cache.LRU[string, Session]
	// users maps a user ID to the account row, read by auth on every
	// request to check deactivation, lock and admin flags.
	users *cache.LRU[string, User]
	// stateGroups maps a state group to its full state. Groups never
	// change once written, so entries need no invalidation; /sync, history
	// visibility and room loads read the same groups again and again.
	stateGroups *cache.LRU[int64, StateKeyMap]
	// currentState maps a room to its current state. Every change goes
	// through PersistEvents or SetRoomHead, which drop the room's entry
	// after committing and before the change becomes visible.
	currentState *cache.LRU[string, StateKeyMap]
	// joinedServers maps a room to the servers of its joined members
	// (JoinedServers), read for every EDU a room's members cause
	// (receipts, typing). Dropped with currentState (currentStateChanged).
	joinedServers *cache.LRU[string, []string]
	// pushRules maps a user to their stored push rules (push_rules.go,
	// whose writes invalidate it).
	pushRules *cache.LRU[string, *PushRules]
	// membershipAt maps (state group, user) to the user's membership in
	// it: every event served carries the reader's membership at it
	// (unsigned.membership), and groups never change.
	membershipAt *cache.LRU[groupUser, string]
	// notifTotals maps a (user, room, thread, position) at or before the
	// evaluated push position to the running totals there (cumAt): what a
	// read receipt subtracts, read by every /sync with unread rooms.
	notifTotals *cache.LRU[totalsKey, [2]int64]
	// roomsOfUser maps a user to their memberships (RoomsOfUser), read by
	// every /sync. A membership changes in current_state (applyChanges:
	// the committer and SetRoomHead drop the users whose member key
	// changed, after committing and before the change becomes visible),
	// in out_of_room_memberships (whose writers drop the user), or with a
	// purged room (which empties the cache).
	roomsOfUser *cache.LRU[string, []RoomMembership]
	// unread maps a user to what their unread counts start from (their
	// read positions and thread heads, unreadBaseOf), read by every /sync.
	// RecordNotifications updates the heads of the users it wrote, after
	// committing and before the events it evaluated wake anyone's /sync;
	// PutReceipt, DeactivateUser and PurgeRoom drop entries after their
	// transactions. Read positions from an event not stored, or stored as
	// an outlier (whose position changes when it joins the timeline), are
	// not cached.
	unread *cache.LRU[string, *unreadBase]
	// threadHeads maps a (room, thread) to its members' stored heads
	// (push_thread_heads), read by the push evaluator for every step that
	// notifies in it (ThreadHeads). RecordNotifications puts the heads it
	// wrote into their threads' entries, after committing; DeactivateUser
	// and PurgeRoom empty the cache after their transactions.
	threadHeads *cache.LRU[[2]string, map[string]ThreadHead]
	// deviceKeys maps a device to its one-time key counts and unused
	// fallback key types, sent with every /sync. UploadKeys and
	// ClaimOneTimeKey drop the device after their transaction; deleting
	// devices (DeleteDevices, DeactivateUser) drops the user's.
	deviceKeys *cache.LRU[userDevice, deviceKeyCounts]
	// toDeviceEmpty holds the devices whose to-device queue was found
	// empty, which spares every /sync its acknowledgement read.
	// SendToDevice drops the recipients after its transaction.
	toDeviceEmpty *cache.LRU[userDevice, bool]
	// accountData maps (user, type) to a global account data entry's
	// content (nil: none), as AccountDataContent reads it (every /sync
	// reads m.ignored_user_list). UpdateAccountData drops the entry after
	// its transaction; deleting devices and deactivation drop the user's.
	accountData *cache.LRU[userType, []byte]
	// freshUnrelated maps an event this server built to its room's
	// relations version before it was stored (UnrelatedAt). Entries never
	// go stale: the version they hold is compared with the current one.
	freshUnrelated *cache.LRU[string, uint64]
}

// totalsKey names the running notification totals of a user's thread at
// a stream position.
type totalsKey struct {
	user, room, thread string
	pos                int64
}

// userDevice keys the per-device caches.
type userDevice struct{ user, device string }

// userType keys accountData.
type userType struct{ user, typ string }

// deviceKeyCounts is what deviceKeys holds of a device.
type deviceKeyCounts struct {
	otk      map[string]int
	fallback []string
}

// groupUser keys membershipAt.
type groupUser struct {
	group int64
	user  string
}

func newCaches(r *cache.Registry) caches {
	return caches{
		sessions: cache.NewLRU[string, Session](r, "access_tokens", "access token → session, read on every authenticated request", tokenCacheBase).
			WithSize(func(k string, v Session) int64 {
				return str(k) + int64(unsafe.Sizeof(v)) + int64(len(v.UserID)+len(v.DeviceID)+len(v.PuppetBy))
			}),
		users: cache.NewLRU[string, User](r, "users", "user ID → account row (admin, deactivated, locked flags)", userCacheBase).
			WithSize(func(k string, v User) int64 {
				return str(k) + int64(unsafe.Sizeof(v)) + int64(len(v.UserID)+len(v.Localpart)+len(v.PasswordHash)+
					len(v.UserType)+len(v.DisplayName)+len(v.AvatarURL))
			}),
		stateGroups: cache.NewLRU[int64, StateKeyMap](r, "state_groups", "state group → room state (immutable; read by sync, visibility, room loads)",
			stateGroupCacheBase).WithSize(func(_ int64, m StateKeyMap) int64 { return 8 + stateMapSize(m) }).WithMaxBytes(stateGroupCacheBytes),
		currentState: cache.NewLRU[string, StateKeyMap](r, "current_state", "room → current state (read by sync, state endpoints, visibility)",
			currentStateCacheBase).WithSize(func(k string, m StateKeyMap) int64 { return str(k) + stateMapSize(m) }).WithMaxBytes(currentStateCacheBytes),
		joinedServers: cache.NewLRU[string, []string](r, "joined_servers", "room → servers of its joined members (every receipt and typing notice sent over federation)",
			currentStateCacheBase).WithSize(func(k string, v []string) int64 {
			n := str(k)
			for _, s := range v {
				n += str(s)
			}
			return n
		}),
		pushRules: cache.NewLRU[string, *PushRules](r, "push_rules", "user → stored push rules (read for every member on every event)",
			pushRulesCacheBase).WithSize(func(k string, p *PushRules) int64 { return str(k) + pushRulesSize(p) }),
		membershipAt: cache.NewLRU[groupUser, string](r, "memberships_at", "(state group, user) → membership (immutable; every event served)",
			membershipAtCacheBase).WithSize(func(k groupUser, v string) int64 { return 8 + str(k.user) + str(v) }),
		notifTotals: cache.NewLRU[totalsKey, [2]int64](r, "notification_totals", "(user, room, thread, receipt position) → running notification totals (final once evaluated)",
			notifTotalsCacheBase).WithSize(func(k totalsKey, _ [2]int64) int64 { return str(k.user) + str(k.room) + str(k.thread) + 24 }),
		unread: cache.NewLRU[string, *unreadBase](r, "unread_bases", "user → read positions and notification thread heads (every /sync)",
			unreadCacheBase).WithSize(func(k string, b *unreadBase) int64 { return str(k) + b.size() }),
		threadHeads: cache.NewLRU[[2]string, map[string]ThreadHead](r, "thread_heads", "(room, thread) → members' notification heads (every push step)",
			threadHeadsCacheBase).WithSize(func(k [2]string, m map[string]ThreadHead) int64 {
			n := str(k[0]) + str(k[1]) + 48
			for u := range m {
				n += str(u) + int64(unsafe.Sizeof(ThreadHead{}))
			}
			return n
		}).WithMaxBytes(threadHeadsCacheBytes),
		deviceKeys: cache.NewLRU[userDevice, deviceKeyCounts](r, "device_key_counts", "device → one-time key counts and unused fallback keys (every /sync)",
			deviceCacheBase),
		toDeviceEmpty: cache.NewLRU[userDevice, bool](r, "to_device_empty", "device → its to-device queue is empty (every /sync acknowledges)",
			deviceCacheBase),
		accountData: cache.NewLRU[userType, []byte](r, "global_account_data", "(user, type) → global account data content (every /sync)",
			accountDataCacheBase).WithSize(func(k userType, v []byte) int64 { return str(k.user) + str(k.typ) + int64(len(v)) }),
		freshUnrelated: cache.NewLRU[string, uint64](r, "fresh_unrelated", "new event of this server → relations version before it (nothing to bundle yet)",
			freshUnrelatedCacheBase).WithSize(func(k string, _ uint64) int64 { return str(k) + 8 }),
		roomsOfUser: cache.NewLRU[string, []RoomMembership](r, "rooms_of_user", "user → memberships in every room (read by every /sync)",
			roomsOfUserCacheBase).WithSize(func(k string, ms []RoomMembership) int64 {
			n := str(k)
			for _, m := range ms {
				n += int64(unsafe.Sizeof(m)) + int64(len(m.RoomID)+len(m.Membership)+len(m.EventID)+len(m.Stripped)+len(m.RoomVersion))
			}
			return n
		}),
	}
}

// str is a string's header and bytes.
func str(s string) int64 { return 16 + int64(len(s)) }

// stateMapSize estimates a state map: Go's maps cost about 1.5 slots per
// entry of key (two strings) and value (one string), plus the strings.
func stateMapSize(m StateKeyMap) int64 {
	n := int64(48)
	for k, v := range m {
		n += 72 + int64(len(k.Type)+len(k.StateKey)+len(v))
	}
	return n
}

func pushRulesSize(p *PushRules) int64 {
	if p == nil {
		return 0
	}
	n := int64(unsafe.Sizeof(*p))
	for _, r := range p.Rules {
		n += int64(unsafe.Sizeof(r)) + int64(len(r.Kind)+len(r.RuleID)+len(r.Pattern)+len(r.Conditions)+len(r.Actions))
	}
	for _, d := range p.Defaults {
		n += int64(unsafe.Sizeof(d)) + int64(len(d.Kind)+len(d.RuleID)+len(d.Actions))
	}
	return n
}

// Caches is the registry the Store's caches are registered in; the process
// registers its other caches there too, so the dashboard sees them all.
func (s *Store) Caches() *cache.Registry { return s.cacheRegistry }

// userChanged drops a user's cached row. Every UPDATE of users goes through
// updateUser or DeactivateUser, which call it; a new writer of the users
// table must call it too.
func (s *Store) userChanged(userID string) { s.c.users.Remove(userID) }

// tokensRevoked drops every cached session of the user (of the listed
// devices only, when any are given). Revocation is rare, so being broader
// than the exact tokens deleted costs one database read per dropped token
// and keeps every path obviously correct.
func (s *Store) tokensRevoked(userID string, deviceIDs ...string) {
	s.c.sessions.RemoveFunc(func(_ string, se Session) bool {
		if se.UserID != userID {
			return false
		}
		if len(deviceIDs) == 0 {
			return true
		}
		for _, d := range deviceIDs {
			if se.DeviceID == d {
				return true
			}
		}
		return false
	})
}

// currentStateChanged drops what the caches hold of a room's current
// state, after a change commits and before it becomes visible.
func (s *Store) currentStateChanged(roomID string) {
	s.c.currentState.Remove(roomID)
	s.c.joinedServers.Remove(roomID)
}

// membersChanged drops the cached rooms of the users whose membership
// changes lists (RoomsOfUser).
func (s *Store) membersChanged(changes []StateChange) {
	for _, c := range changes {
		if c.Key.Type == "m.room.member" {
			s.c.roomsOfUser.Remove(c.Key.StateKey)
		}
	}
}

// devicesDeleted drops what the per-device caches hold of the user's
// devices (all of them, for simplicity: deletions are rare), and the
// user's account data (a device's notification settings go with it).
func (s *Store) devicesDeleted(userID string) {
	s.c.deviceKeys.RemoveFunc(func(k userDevice, _ deviceKeyCounts) bool { return k.user == userID })
	s.c.toDeviceEmpty.RemoveFunc(func(k userDevice, _ bool) bool { return k.user == userID })
	s.c.accountData.RemoveFunc(func(k userType, _ []byte) bool { return k.user == userID })
}
