package rooms

import (
	"encoding/json/jsontext"
	"slices"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

func TestCreateRoomPresets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		preset, visibility         string
		joinRule, guest            string
		wantInviteLevel            int64
		inviteesAreAdminsOrCreator bool
	}{
		{PresetPrivateChat, "", JoinRuleInvite, "can_join", 0, false},
		{PresetTrustedPrivateChat, "", JoinRuleInvite, "can_join", 0, true},
		{PresetPublicChat, "", JoinRulePublic, "forbidden", 50, false},
		{"", "public", JoinRulePublic, "forbidden", 50, false},
		{"", "private", JoinRuleInvite, "can_join", 0, false},
	}
	for _, tt := range tests {
		for _, ver := range allVersions() {
			t.Run(ver+"/"+tt.preset+tt.visibility, func(t *testing.T) {
				t.Parallel()
				rv := MustVersion(ver)
				key := testKey(t, "example.org")
				req := CreateRoomRequest{
					Version: rv, RoomID: roomIDFor(rv), Creator: alice, Preset: tt.preset, Visibility: tt.visibility,
					CanonicalAlias: "#pub:example.org", Name: "Pub", Topic: "Drinks",
					Invite: []string{bob}, CreationContent: map[string]jsontext.Value{"m.federate": jsontext.Value("false")},
					InitialState: []InitialStateEvent{
						{Type: TypeEncryption, Content: jsontext.Value(`{"algorithm":"m.megolm.v1.aes-sha2"}`)},
						{Type: TypeName, Content: jsontext.Value(`{"name":"overridden"}`)},
					},
				}
				events, b, err := CreateRoom(req, key, clock())
				if err != nil {
					t.Fatal(err)
				}
				var order []string
				for _, e := range events {
					sk, _ := e.StateKey()
					order = append(order, e.Type()+"|"+sk)
				}
				wantOrder := []string{
					TypeCreate + "|", TypeMember + "|" + alice, TypePowerLevels + "|", TypeCanonicalAlias + "|",
					TypeJoinRules + "|", TypeHistoryVis + "|", TypeGuestAccess + "|", TypeEncryption + "|",
					TypeName + "|", TypeTopic + "|", TypeMember + "|" + bob,
				}
				if tt.guest == "forbidden" {
					// No event: its absence forbids guests (as in Synapse).
					wantOrder = slices.DeleteFunc(wantOrder, func(s string) bool { return s == TypeGuestAccess+"|" })
				}
				if strings.Join(order, ",") != strings.Join(wantOrder, ",") {
					t.Fatalf("order:\n%s\nwant\n%s", strings.Join(order, "\n"), strings.Join(wantOrder, "\n"))
				}
				// Every event authorises against its own auth events, and the
				// DAG is linear with increasing depth.
				byID := EventMap{}
				for i, e := range events {
					var auth []*Event
					for _, id := range e.AuthEventIDs() {
						auth = append(auth, byID[id])
					}
					if err := AuthorizeByAuthEvents(e, auth, events[0], nil); err != nil {
						t.Errorf("event %d (%s) fails its auth events: %v", i, e.Type(), err)
					}
					if e.Depth() != int64(i+1) {
						t.Errorf("event %d depth %d", i, e.Depth())
					}
					if i > 0 && (len(e.PrevEventIDs()) != 1 || e.PrevEventIDs()[0] != events[i-1].ID()) {
						t.Errorf("event %d prev_events %v", i, e.PrevEventIDs())
					}
					if err := VerifySignatures(e, keyring(1<<60, key)); err != nil || !e.VerifyContentHash() {
						t.Errorf("event %d: signature %v, hash ok %v", i, err, e.VerifyContentHash())
					}
					byID.Add(e)
				}
				create := events[0]
				c := create.Content()
				if gjson.GetBytes(c, "room_version").Str != ver || gjson.GetBytes(c, `m\.federate`).Type != gjson.False {
					t.Errorf("create content %s", c)
				}
				if has := gjson.GetBytes(c, "creator").Exists(); has != rv.CreatorInContent {
					t.Errorf("creator in content = %v for v%s", has, ver)
				}
				st := b.State
				if jr := contentString(st.Get(TypeJoinRules, "").Content(), "join_rule"); jr != tt.joinRule {
					t.Errorf("join_rule %s, want %s", jr, tt.joinRule)
				}
				if ga := st.Get(TypeGuestAccess, ""); tt.guest == "forbidden" && ga != nil {
					t.Errorf("guest_access event %s, want none", ga.Content())
				} else if tt.guest != "forbidden" && contentString(ga.Content(), "guest_access") != tt.guest {
					t.Errorf("guest_access %s, want %s", ga.Content(), tt.guest)
				}
				if h := contentString(st.Get(TypeHistoryVis, "").Content(), "history_visibility"); h != "shared" {
					t.Errorf("history_visibility %s", h)
				}
				if n := contentString(st.Get(TypeName, "").Content(), "name"); n != "Pub" {
					t.Errorf("name %q: the name parameter must override initial_state", n)
				}
				if st.membership(bob) != MembershipInvite {
					t.Errorf("bob is %s, want invited", st.membership(bob))
				}
				pl := EffectivePowerLevels(rv, st.Get(TypePowerLevels, ""), create)
				if pl.Invite != tt.wantInviteLevel {
					t.Errorf("invite level %d, want %d", pl.Invite, tt.wantInviteLevel)
				}
				plUsers := gjson.GetBytes(st.Get(TypePowerLevels, "").Content(), "users")
				if rv.PrivilegedCreators {
					if plUsers.Get(gjsonKey(alice)).Exists() {
						t.Error("v12 creator listed in power_levels.users")
					}
					if pl.UserLevel(alice) != PowerInfinite {
						t.Errorf("v12 creator level %d", pl.UserLevel(alice))
					}
					tomb, state := pl.EventLevel("m.room.tombstone", true), pl.StateDefault
					if tomb <= state {
						t.Errorf("v12 tombstone level %d not above state_default %d", tomb, state)
					}
					isExtra := gjson.GetBytes(c, "additional_creators.0").Str == bob
					if isExtra != tt.inviteesAreAdminsOrCreator {
						t.Errorf("bob in additional_creators = %v", isExtra)
					}
				} else {
					if pl.UserLevel(alice) != 100 {
						t.Errorf("creator level %d", pl.UserLevel(alice))
					}
					if got := pl.UserLevel(bob) == 100; got != tt.inviteesAreAdminsOrCreator {
						t.Errorf("invitee has creator's level = %v", got)
					}
				}
				if rv.RoomIDFromCreateEvent && b.RoomID != "!"+create.ID()[1:] {
					t.Errorf("room ID %s", b.RoomID)
				}
			})
		}
	}
}

// TestCreateRoomInitialStateWins checks what a room upgrade relies on:
// power levels and preset state given in initial_state are sent once, in
// the place of the defaults, so the creator holds the copied levels from
// the start.
func TestCreateRoomInitialStateWins(t *testing.T) {
	t.Parallel()
	rv := MustVersion("11")
	req := CreateRoomRequest{Version: rv, RoomID: roomIDFor(rv), Creator: alice, Preset: PresetPrivateChat,
		PowerLevelOverride: map[string]jsontext.Value{"ban": jsontext.Value("1")},
		InitialState: []InitialStateEvent{
			{Type: TypeJoinRules, Content: jsontext.Value(`{"join_rule":"public"}`)},
			{Type: TypePowerLevels, Content: jsontext.Value(`{"users":{"@alice:example.org":100,"@bob:example.org":50},"events_default":10}`)},
		}}
	events, b, err := CreateRoom(req, testKey(t, "example.org"), clock())
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, e := range events {
		order = append(order, e.Type())
	}
	want := []string{TypeCreate, TypeMember, TypePowerLevels, TypeHistoryVis, TypeGuestAccess, TypeJoinRules}
	if strings.Join(order, ",") != strings.Join(want, ",") {
		t.Fatalf("order %v, want %v", order, want)
	}
	pl := b.State.Get(TypePowerLevels, "").Content()
	if gjson.GetBytes(pl, "events_default").Int() != 10 || gjson.GetBytes(pl, "ban").Exists() || gjson.GetBytes(pl, "users.@bob:example\\.org").Int() != 50 {
		t.Errorf("power levels %s: want initial_state's, without defaults or override", pl)
	}
	if jr := contentString(b.State.Get(TypeJoinRules, "").Content(), "join_rule"); jr != JoinRulePublic {
		t.Errorf("join_rule %s", jr)
	}
}

func TestCreateRoomErrors(t *testing.T) {
	t.Parallel()
	key := testKey(t, "example.org")
	tests := []struct {
		name string
		req  CreateRoomRequest
	}{
		{"no version", CreateRoomRequest{Creator: alice, RoomID: "!r:example.org"}},
		{"v11 without room ID", CreateRoomRequest{Version: MustVersion("11"), Creator: alice}},
		{"v12 with room ID", CreateRoomRequest{Version: MustVersion("12"), Creator: alice, RoomID: "!r:example.org"}},
		{"unknown preset", CreateRoomRequest{Version: MustVersion("11"), Creator: alice, RoomID: "!r:example.org", Preset: "party"}},
		{"override making the creator powerless", CreateRoomRequest{Version: MustVersion("11"), Creator: alice, RoomID: "!r:example.org",
			PowerLevelOverride: map[string]jsontext.Value{"users": jsontext.Value(`{}`)}, Name: "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, _, err := CreateRoom(tt.req, key, clock()); err == nil {
				t.Error("CreateRoom succeeded")
			}
		})
	}
}

func TestCapability(t *testing.T) {
	t.Parallel()
	c := Capability(DefaultRoomVersion)
	if c.Default != "11" {
		t.Errorf("default %s, want 11 (Synapse's default_room_version)", c.Default)
	}
	if len(c.Available) != 12 {
		t.Errorf("%d versions available, want 12", len(c.Available))
	}
	for _, v := range KnownVersions() {
		if c.Available[v] != "stable" {
			t.Errorf("version %s is %q", v, c.Available[v])
		}
	}
	if _, ok := c.Available[c.Default]; !ok {
		t.Error("default version not available")
	}
	if got := strings.Join(KnownVersions(), ","); got != "1,2,3,4,5,6,7,8,9,10,11,12" {
		t.Errorf("KnownVersions = %s", got)
	}
}

func TestVersionTable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ver      string
		ids      EventIDFormat
		redact   RedactionRules
		stateRes StateResAlgorithm
	}{
		{"1", EventIDRandom, RedactV1, StateResV1},
		{"2", EventIDRandom, RedactV1, StateResV2},
		{"3", EventIDHashBase64, RedactV1, StateResV2},
		{"4", EventIDHashURLSafe, RedactV1, StateResV2},
		{"5", EventIDHashURLSafe, RedactV1, StateResV2},
		{"6", EventIDHashURLSafe, RedactV6, StateResV2},
		{"7", EventIDHashURLSafe, RedactV6, StateResV2},
		{"8", EventIDHashURLSafe, RedactV8, StateResV2},
		{"9", EventIDHashURLSafe, RedactV9, StateResV2},
		{"10", EventIDHashURLSafe, RedactV9, StateResV2},
		{"11", EventIDHashURLSafe, RedactV11, StateResV2},
		{"12", EventIDHashURLSafe, RedactV11, StateResV21},
	}
	for _, tt := range tests {
		t.Run(tt.ver, func(t *testing.T) {
			t.Parallel()
			rv, ok := LookupVersion(tt.ver)
			if !ok {
				t.Fatal("unknown")
			}
			if rv.EventIDs != tt.ids || rv.Redaction != tt.redact || rv.StateRes != tt.stateRes {
				t.Errorf("got ids %v redact %v stateres %v", rv.EventIDs, rv.Redaction, rv.StateRes)
			}
		})
	}
	if _, ok := LookupVersion("13"); ok {
		t.Error("version 13 known")
	}
}
