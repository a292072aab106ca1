package synapse_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Hearth federating with Synapse, the reference implementation: each test
// runs a Hearth server (on SQLite, and on PostgreSQL when
// HEARTH_TEST_POSTGRES is set) and a Synapse (on SQLite), both on
// loopback, with mautrix-go clients on both sides.

// A Synapse user joins a Hearth room by its alias and another by its room
// ID with via; messages go both ways and reach /sync on both sides; the
// Synapse user leaves and the Hearth side sees it.
func TestSynapseUserJoinsHearthRoom(t *testing.T) {
	each(t, func(t *testing.T, p pair) {
		ctx := t.Context()
		alice := p.hearthUser(t, "alice")
		bob := p.synapseUser(t, "bob")

		byAlias := alice.createRoom(t, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "lounge", Name: "Lounge"})
		alias := fmt.Sprintf("#lounge:%s", p.hearth.Cfg.ServerName)
		joined, err := bob.JoinRoom(ctx, alias, nil)
		if err != nil {
			t.Fatalf("bob (Synapse) joins %s: %v", alias, err)
		}
		if joined.RoomID != byAlias {
			t.Fatalf("bob joined %s, want %s", joined.RoomID, byAlias)
		}
		alice.waitMembership(t, byAlias, bob.UserID, "join")
		// Synapse has the room's state: its name.
		var name event.RoomNameEventContent
		if err := bob.StateEvent(ctx, byAlias, event.StateRoomName, "", &name); err != nil || name.Name != "Lounge" {
			t.Errorf("room name on Synapse: %q %v", name.Name, err)
		}

		alice.send(t, byAlias, "hello from Hearth")
		bob.waitMessage(t, byAlias, alice.UserID, "hello from Hearth")
		bob.send(t, byAlias, "hello from Synapse")
		alice.waitMessage(t, byAlias, bob.UserID, "hello from Synapse")

		// By room ID: v12 room IDs name no server, so via says where.
		byID := alice.createRoom(t, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if _, err := bob.JoinRoom(ctx, string(byID), &mautrix.ReqJoinRoom{Via: []string{p.hearth.Cfg.ServerName}}); err != nil {
			t.Fatalf("bob (Synapse) joins %s via %s: %v", byID, p.hearth.Cfg.ServerName, err)
		}
		alice.waitMembership(t, byID, bob.UserID, "join")
		bob.send(t, byID, "joined by ID")
		alice.waitMessage(t, byID, bob.UserID, "joined by ID")
		alice.send(t, byID, "welcome")
		bob.waitMessage(t, byID, alice.UserID, "welcome")

		// bob leaves: Hearth sees it, and Synapse no longer lists the room.
		if _, err := bob.LeaveRoom(ctx, byID); err != nil {
			t.Fatalf("bob leaves: %v", err)
		}
		alice.waitMembership(t, byID, bob.UserID, "leave")
		bob.waitLeft(t, byID)
		rooms, err := bob.JoinedRooms(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(rooms.JoinedRooms, byID) || !slices.Contains(rooms.JoinedRooms, byAlias) {
			t.Errorf("bob's joined rooms after leaving %s: %v", byID, rooms.JoinedRooms)
		}
	})
}

// A Hearth user joins a Synapse room by its alias and another by its room
// ID with via; messages go both ways; the Hearth user leaves and the
// Synapse side sees it.
func TestHearthUserJoinsSynapseRoom(t *testing.T) {
	each(t, func(t *testing.T, p pair) {
		ctx := t.Context()
		alice := p.hearthUser(t, "alice")
		bob := p.synapseUser(t, "bob")

		byAlias := bob.createRoom(t, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "garden", Name: "Garden"})
		alias := fmt.Sprintf("#garden:%s", p.synapse.Name)
		joined, err := alice.JoinRoom(ctx, alias, nil)
		if err != nil {
			t.Fatalf("alice (Hearth) joins %s: %v", alias, err)
		}
		if joined.RoomID != byAlias {
			t.Fatalf("alice joined %s, want %s", joined.RoomID, byAlias)
		}
		bob.waitMembership(t, byAlias, alice.UserID, "join")
		var name event.RoomNameEventContent
		if err := alice.StateEvent(ctx, byAlias, event.StateRoomName, "", &name); err != nil || name.Name != "Garden" {
			t.Errorf("room name on Hearth: %q %v", name.Name, err)
		}
		members, err := alice.JoinedMembers(ctx, byAlias)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := members.Joined[bob.UserID]; !ok || len(members.Joined) != 2 {
			t.Errorf("joined members on Hearth: %v", members.Joined)
		}

		bob.send(t, byAlias, "hello from Synapse")
		alice.waitMessage(t, byAlias, bob.UserID, "hello from Synapse")
		alice.send(t, byAlias, "hello from Hearth")
		bob.waitMessage(t, byAlias, alice.UserID, "hello from Hearth")

		byID := bob.createRoom(t, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if _, err := alice.JoinRoom(ctx, string(byID), &mautrix.ReqJoinRoom{Via: []string{p.synapse.Name}}); err != nil {
			t.Fatalf("alice (Hearth) joins %s via %s: %v", byID, p.synapse.Name, err)
		}
		bob.waitMembership(t, byID, alice.UserID, "join")
		alice.send(t, byID, "joined by ID")
		bob.waitMessage(t, byID, alice.UserID, "joined by ID")
		bob.send(t, byID, "welcome")
		alice.waitMessage(t, byID, bob.UserID, "welcome")

		if _, err := alice.LeaveRoom(ctx, byID); err != nil {
			t.Fatalf("alice leaves: %v", err)
		}
		bob.waitMembership(t, byID, alice.UserID, "leave")
		alice.waitLeft(t, byID)
		// Hearth's copy of the room no longer lets alice send.
		if _, err := alice.SendText(ctx, byID, "still here?"); err == nil {
			t.Error("alice could still send to a room she left")
		}
	})
}

// Invites both ways. Each side first invites a user whose server is not in
// the room yet, who rejects it (through the inviting server: make_leave,
// send_leave), then one who accepts.
func TestInvites(t *testing.T) {
	each(t, func(t *testing.T, p pair) {
		ctx := t.Context()
		alice, dan, erin := p.hearthUser(t, "alice"), p.hearthUser(t, "dan"), p.hearthUser(t, "erin")
		bob, carol := p.synapseUser(t, "bob"), p.synapseUser(t, "carol")

		// waitInviteNamed waits for an invite whose stripped state
		// names the room.
		waitInviteNamed := func(t *testing.T, u *user, room id.RoomID, name string) {
			t.Helper()
			u.wait(t, "the invite to "+name, func(r *mautrix.RespSync) bool {
				inv, ok := r.Rooms.Invite[room]
				if !ok {
					return false
				}
				if !slices.ContainsFunc(inv.State.Events, func(e *event.Event) bool {
					return e.Type == event.StateRoomName && e.Content.Raw["name"] == name
				}) {
					t.Errorf("the invite's stripped state lacks the room's name: %d events", len(inv.State.Events))
				}
				return true
			})
		}

		t.Run("HearthInvitesSynapseUsers", func(t *testing.T) {
			room := alice.createRoom(t, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Hearth's plans"})
			if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
				t.Fatalf("alice invites carol (Synapse): %v", err)
			}
			waitInviteNamed(t, carol, room, "Hearth's plans")
			if _, err := carol.LeaveRoom(ctx, room); err != nil {
				t.Fatalf("carol rejects: %v", err)
			}
			alice.waitMembership(t, room, carol.UserID, "leave")
			carol.waitLeft(t, room)

			if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
				t.Fatalf("alice invites bob (Synapse): %v", err)
			}
			waitInviteNamed(t, bob, room, "Hearth's plans")
			if _, err := bob.JoinRoomByID(ctx, room); err != nil {
				t.Fatalf("bob accepts: %v", err)
			}
			alice.waitMembership(t, room, bob.UserID, "join")
			alice.send(t, room, "glad you came")
			bob.waitMessage(t, room, alice.UserID, "glad you came")
		})

		t.Run("SynapseInvitesHearthUsers", func(t *testing.T) {
			room := bob.createRoom(t, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Synapse's plans"})
			if _, err := bob.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: erin.UserID}); err != nil {
				t.Fatalf("bob invites erin (Hearth): %v", err)
			}
			waitInviteNamed(t, erin, room, "Synapse's plans")
			if _, err := erin.LeaveRoom(ctx, room); err != nil {
				t.Fatalf("erin rejects: %v", err)
			}
			bob.waitMembership(t, room, erin.UserID, "leave")
			erin.waitLeft(t, room)

			if _, err := bob.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: dan.UserID}); err != nil {
				t.Fatalf("bob invites dan (Hearth): %v", err)
			}
			waitInviteNamed(t, dan, room, "Synapse's plans")
			if _, err := dan.JoinRoomByID(ctx, room); err != nil {
				t.Fatalf("dan accepts: %v", err)
			}
			bob.waitMembership(t, room, dan.UserID, "join")
			bob.send(t, room, "glad you came")
			dan.waitMessage(t, room, bob.UserID, "glad you came")
			dan.send(t, room, "thanks")
			bob.waitMessage(t, room, dan.UserID, "thanks")
		})
	})
}

// Display name changes reach the other side's /sync and member list.
func TestDisplayNames(t *testing.T) {
	each(t, func(t *testing.T, p pair) {
		ctx := t.Context()
		alice := p.hearthUser(t, "alice")
		bob := p.synapseUser(t, "bob")
		room := alice.createRoom(t, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{p.hearth.Cfg.ServerName}}); err != nil {
			t.Fatal(err)
		}
		alice.waitMembership(t, room, bob.UserID, "join")

		t.Run("HearthToSynapse", func(t *testing.T) {
			if err := alice.SetDisplayName(ctx, "Alice of Hearth"); err != nil {
				t.Fatal(err)
			}
			bob.waitMember(t, "alice's new display name", room, alice.UserID, func(c map[string]any) bool {
				return c["membership"] == "join" && c["displayname"] == "Alice of Hearth"
			})
			members, err := bob.JoinedMembers(ctx, room)
			if err != nil {
				t.Fatal(err)
			}
			if got := members.Joined[alice.UserID].DisplayName; got != "Alice of Hearth" {
				t.Errorf("alice's display name in Synapse's member list: %q", got)
			}
		})
		t.Run("SynapseToHearth", func(t *testing.T) {
			if err := bob.SetDisplayName(ctx, "Bob of Synapse"); err != nil {
				t.Fatal(err)
			}
			alice.waitMember(t, "bob's new display name", room, bob.UserID, func(c map[string]any) bool {
				return c["membership"] == "join" && c["displayname"] == "Bob of Synapse"
			})
			members, err := alice.JoinedMembers(ctx, room)
			if err != nil {
				t.Fatal(err)
			}
			if got := members.Joined[bob.UserID].DisplayName; got != "Bob of Synapse" {
				t.Errorf("bob's display name in Hearth's member list: %q", got)
			}
		})
	})
}

// Typing notifications and read receipts, both ways.
func TestTypingAndReceipts(t *testing.T) {
	each(t, func(t *testing.T, p pair) {
		ctx := t.Context()
		alice := p.hearthUser(t, "alice")
		bob := p.synapseUser(t, "bob")
		room := alice.createRoom(t, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{p.hearth.Cfg.ServerName}}); err != nil {
			t.Fatal(err)
		}
		alice.waitMembership(t, room, bob.UserID, "join")

		typing := func(who id.UserID, want bool) func(map[string]any) bool {
			return func(c map[string]any) bool {
				ids, _ := c["user_ids"].([]any)
				return slices.Contains(ids, any(string(who))) == want
			}
		}
		t.Run("TypingHearthToSynapse", func(t *testing.T) {
			if _, err := alice.UserTyping(ctx, room, true, 20*time.Second); err != nil {
				t.Fatal(err)
			}
			bob.waitEphemeral(t, "alice typing", room, event.EphemeralEventTyping, typing(alice.UserID, true))
			if _, err := alice.UserTyping(ctx, room, false, 0); err != nil {
				t.Fatal(err)
			}
			bob.waitEphemeral(t, "alice no longer typing", room, event.EphemeralEventTyping, typing(alice.UserID, false))
		})
		t.Run("TypingSynapseToHearth", func(t *testing.T) {
			if _, err := bob.UserTyping(ctx, room, true, 20*time.Second); err != nil {
				t.Fatal(err)
			}
			alice.waitEphemeral(t, "bob typing", room, event.EphemeralEventTyping, typing(bob.UserID, true))
			if _, err := bob.UserTyping(ctx, room, false, 0); err != nil {
				t.Fatal(err)
			}
			alice.waitEphemeral(t, "bob no longer typing", room, event.EphemeralEventTyping, typing(bob.UserID, false))
		})

		read := func(evID id.EventID, who id.UserID) func(map[string]any) bool {
			return func(c map[string]any) bool {
				byType, _ := c[string(evID)].(map[string]any)
				users, _ := byType["m.read"].(map[string]any)
				_, ok := users[string(who)]
				return ok
			}
		}
		t.Run("ReceiptHearthToSynapse", func(t *testing.T) {
			evID := bob.send(t, room, "read me, alice")
			alice.waitMessage(t, room, bob.UserID, "read me, alice")
			if err := alice.SendReceipt(ctx, room, evID, event.ReceiptTypeRead, nil); err != nil {
				t.Fatal(err)
			}
			bob.waitEphemeral(t, "alice's read receipt", room, event.EphemeralEventReceipt, read(evID, alice.UserID))
		})
		t.Run("ReceiptSynapseToHearth", func(t *testing.T) {
			evID := alice.send(t, room, "read me, bob")
			bob.waitMessage(t, room, alice.UserID, "read me, bob")
			if err := bob.SendReceipt(ctx, room, evID, event.ReceiptTypeRead, nil); err != nil {
				t.Fatal(err)
			}
			alice.waitEphemeral(t, "bob's read receipt", room, event.EphemeralEventReceipt, read(evID, bob.UserID))
		})
	})
}

// Profiles of the other server's users, through the client API
// (GET /profile/{userId}, answered over federation by query/profile).
func TestRemoteProfiles(t *testing.T) {
	each(t, func(t *testing.T, p pair) {
		ctx := t.Context()
		alice := p.hearthUser(t, "alice")
		bob := p.synapseUser(t, "bob")
		if err := alice.SetDisplayName(ctx, "Alice of Hearth"); err != nil {
			t.Fatal(err)
		}
		if err := bob.SetDisplayName(ctx, "Bob of Synapse"); err != nil {
			t.Fatal(err)
		}

		t.Run("SynapseAsksHearth", func(t *testing.T) {
			prof, err := bob.GetProfile(ctx, alice.UserID)
			if err != nil {
				t.Fatalf("Synapse's profile of %s: %v", alice.UserID, err)
			}
			if prof.DisplayName != "Alice of Hearth" {
				t.Errorf("Synapse's profile of %s: %+v", alice.UserID, prof)
			}
		})
		t.Run("HearthAsksSynapse", func(t *testing.T) {
			prof, err := alice.GetProfile(ctx, bob.UserID)
			if err != nil {
				t.Fatalf("Hearth's profile of %s: %v", bob.UserID, err)
			}
			if prof.DisplayName != "Bob of Synapse" {
				t.Errorf("Hearth's profile of %s: %+v", bob.UserID, prof)
			}
		})
	})
}

// Rooms of the versions in use today (10 and 11, whose event formats and
// room IDs differ from 12's), created on either side and joined from the
// other. Messages go both ways, and the joiner reads the history from
// before the join (the room's history is shared), which its server
// backfills from the other.
func TestRoomVersionsAndHistory(t *testing.T) {
	each(t, func(t *testing.T, p pair) {
		alice := p.hearthUser(t, "alice")
		bob := p.synapseUser(t, "bob")
		for _, v := range []id.RoomVersion{"10", "11", "12"} {
			t.Run("HearthRoomV"+string(v), func(t *testing.T) {
				crossJoin(t, alice, bob, p.hearth.Cfg.ServerName, v)
			})
			t.Run("SynapseRoomV"+string(v), func(t *testing.T) {
				crossJoin(t, bob, alice, p.synapse.Name, v)
			})
		}
	})
}

// crossJoin has owner create a public room of version v on server, send
// three messages, and joiner join it.
func crossJoin(t *testing.T, owner, joiner *user, server string, v id.RoomVersion) {
	t.Helper()
	ctx := t.Context()
	room := owner.createRoom(t, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: v})
	early := []string{"early 1", "early 2", "early 3"}
	for _, body := range early {
		owner.send(t, room, body)
	}
	// Synapse never takes the server from a room ID (room IDs are
	// opaque), so via is given for every version.
	if _, err := joiner.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{server}}); err != nil {
		t.Fatalf("%s joins %s (version %s): %v", joiner.UserID, room, v, err)
	}
	var create event.CreateEventContent
	if err := joiner.StateEvent(ctx, room, event.StateCreate, "", &create); err != nil || create.RoomVersion != v {
		t.Errorf("room version on the joiner's server: %q %v", create.RoomVersion, err)
	}
	owner.waitMembership(t, room, joiner.UserID, "join")
	joiner.send(t, room, "hi from "+string(joiner.UserID))
	owner.waitMessage(t, room, joiner.UserID, "hi from "+string(joiner.UserID))
	owner.send(t, room, "hi back")
	joiner.waitMessage(t, room, owner.UserID, "hi back")

	t.Run("History", func(t *testing.T) {
		msgs, err := joiner.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range msgs.Chunk {
			if b, ok := e.Content.Raw["body"].(string); ok && e.Type == event.EventMessage && e.Sender == owner.UserID {
				got = append(got, b)
			}
		}
		slices.Reverse(got)
		if len(got) < 4 || !slices.Equal(got[:3], early) {
			t.Errorf("%s's history of %s: %q, want %q first", joiner.UserID, room, got, early)
		}
	})
}

// Media across servers: each side downloads, through its own server, what
// a user of the other uploaded (the server fetches it over federation).
func TestMedia(t *testing.T) {
	each(t, func(t *testing.T, p pair) {
		ctx := t.Context()
		alice := p.hearthUser(t, "alice")
		bob := p.synapseUser(t, "bob")
		for _, tc := range []struct {
			name       string
			up, down   *user
			data, mime string
		}{
			{"SynapseFetchesFromHearth", alice, bob, "a picture on Hearth", "text/plain"},
			{"HearthFetchesFromSynapse", bob, alice, "a picture on Synapse", "text/plain"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				up, err := tc.up.UploadBytes(ctx, []byte(tc.data), tc.mime)
				if err != nil {
					t.Fatalf("%s uploads: %v", tc.up.UserID, err)
				}
				got, err := tc.down.DownloadBytes(ctx, up.ContentURI)
				if err != nil {
					t.Fatalf("%s downloads %s: %v", tc.down.UserID, up.ContentURI, err)
				}
				if string(got) != tc.data {
					t.Errorf("%s got %q, want %q", tc.down.UserID, got, tc.data)
				}
			})
		}
	})
}

// Room directories across servers: each side lists, through its own
// server, the public rooms of the other.
func TestPublicRooms(t *testing.T) {
	each(t, func(t *testing.T, p pair) {
		ctx := t.Context()
		alice := p.hearthUser(t, "alice")
		bob := p.synapseUser(t, "bob")
		onHearth := alice.createRoom(t, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "Hearth square"})
		onSynapse := bob.createRoom(t, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "Synapse square"})
		for _, tc := range []struct {
			name   string
			asker  *user
			server string
			room   id.RoomID
			title  string
		}{
			{"SynapseListsHearth", bob, p.hearth.Cfg.ServerName, onHearth, "Hearth square"},
			{"HearthListsSynapse", alice, p.synapse.Name, onSynapse, "Synapse square"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				// Polled: Synapse builds its list from room statistics
				// it updates in the background.
				var chunk []*mautrix.PublicRoomInfo
				for deadline := time.Now().Add(waitTimeout); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
					resp, err := tc.asker.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: tc.server, Limit: 10})
					if err != nil {
						t.Fatalf("%s lists %s's public rooms: %v", tc.asker.UserID, tc.server, err)
					}
					chunk = resp.Chunk
					if slices.ContainsFunc(chunk, func(r *mautrix.PublicRoomInfo) bool { return r.RoomID == tc.room && r.Name == tc.title }) {
						return
					}
				}
				t.Errorf("%s's public rooms as %s sees them: %+v", tc.server, tc.asker.UserID, chunk)
			})
		}
	})
}

// Kicks, bans and redactions across: the room's owner on one side acts on
// a member from the other, and the member's side sees it.
func TestModeration(t *testing.T) {
	each(t, func(t *testing.T, p pair) {
		alice := p.hearthUser(t, "alice")
		bob := p.synapseUser(t, "bob")
		// bob, banned, tries to join again: Hearth refuses make_join.
		p.expect("Request failed: GET matrix-federation://"+p.hearth.Cfg.ServerName+"/_matrix/federation/v1/make_join/", "403: Forbidden")
		t.Run("HearthModeratesSynapseUser", func(t *testing.T) {
			moderate(t, alice, bob, p.hearth.Cfg.ServerName)
		})
		t.Run("SynapseModeratesHearthUser", func(t *testing.T) {
			moderate(t, bob, alice, p.synapse.Name)
		})
	})
}

// moderate has owner make a public room on server that member joins; owner
// redacts member's message (which the member's server applies), kicks
// member, who joins again, and bans them.
func moderate(t *testing.T, owner, member *user, server string) {
	t.Helper()
	ctx := t.Context()
	room := owner.createRoom(t, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	join := func() {
		t.Helper()
		if _, err := member.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{server}}); err != nil {
			t.Fatalf("%s joins: %v", member.UserID, err)
		}
		owner.waitMembership(t, room, member.UserID, "join")
	}
	join()

	spam := member.send(t, room, "spam")
	owner.waitMessage(t, room, member.UserID, "spam")
	if _, err := owner.RedactEvent(ctx, room, spam, mautrix.ReqRedact{Reason: "no spam"}); err != nil {
		t.Fatalf("%s redacts: %v", owner.UserID, err)
	}
	member.wait(t, "the redaction of "+string(spam), func(r *mautrix.RespSync) bool {
		jr, ok := r.Rooms.Join[room]
		return ok && slices.ContainsFunc(jr.Timeline.Events, func(e *event.Event) bool {
			return e.Type == event.EventRedaction && (e.Redacts == spam || e.Content.Raw["redacts"] == string(spam))
		})
	})
	t.Run("RedactionApplied", func(t *testing.T) {
		// The member's server applied it: the message has no body any
		// more.
		var redacted *event.Event
		for deadline := time.Now().Add(waitTimeout); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			ev, err := member.GetEvent(ctx, room, spam)
			if err != nil {
				t.Fatalf("%s gets %s: %v", member.UserID, spam, err)
			}
			if redacted = ev; ev.Content.Raw["body"] == nil {
				break
			}
		}
		if redacted.Content.Raw["body"] != nil {
			t.Errorf("%s's server still shows the redacted message: %v", member.UserID, redacted.Content.Raw)
		}
	})

	if _, err := owner.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: member.UserID, Reason: "calm down"}); err != nil {
		t.Fatalf("%s kicks: %v", owner.UserID, err)
	}
	member.waitLeft(t, room)
	join()
	if _, err := owner.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: member.UserID, Reason: "enough"}); err != nil {
		t.Fatalf("%s bans: %v", owner.UserID, err)
	}
	member.waitLeft(t, room)
	if _, err := member.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{server}}); err == nil {
		t.Errorf("%s joined again after the ban", member.UserID)
	}
}
