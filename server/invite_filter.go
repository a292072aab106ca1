package server

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"hearth/server/matrix"
	"hearth/server/storage"
)

// Invite filtering (MSC4155): a user's account data says whose invites
// to allow, to ignore (the inviter sees success, the user never sees the
// invite) or to block (the invite is refused with 403 M_INVITE_BLOCKED).
// Rules are globs (* and ?) on the inviter's user ID or server name, and
// the first list that matches decides, in this order: allowed_users,
// ignored_users, blocked_users, allowed_servers, ignored_servers,
// blocked_servers. Without a match, invites are allowed.

// inviteConfigTypes are the account data types the configuration is read
// from: the stable name first, then MSC4155's unstable one.
var inviteConfigTypes = []string{"m.invite_permission_config", "org.matrix.msc4155.invite_permission_config"}

type inviteRule int

const (
	inviteAllow inviteRule = iota
	inviteIgnore
	inviteBlock
)

type inviteConfig struct {
	AllowedUsers   []string `json:"allowed_users"`
	IgnoredUsers   []string `json:"ignored_users"`
	BlockedUsers   []string `json:"blocked_users"`
	AllowedServers []string `json:"allowed_servers"`
	IgnoredServers []string `json:"ignored_servers"`
	BlockedServers []string `json:"blocked_servers"`
}

// inviteConfigOf reads the user's invite filter (nil: none). A
// configuration that is not the expected shape is no filter, so a client
// bug cannot lock a user out of every invite.
func (s *Server) inviteConfigOf(ctx context.Context, userID string) (*inviteConfig, error) {
	for _, typ := range inviteConfigTypes {
		raw, err := s.store.AccountDataContent(ctx, userID, "", typ)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var c inviteConfig
		if json.Unmarshal(raw, &c) != nil {
			return nil, nil
		}
		return &c, nil
	}
	return nil, nil
}

// rule is what the configuration says of an invite from inviter.
func (c *inviteConfig) rule(inviter string) inviteRule {
	if c == nil {
		return inviteAllow
	}
	_, server, _ := strings.Cut(inviter, ":")
	for _, r := range []struct {
		globs  []string
		target string
		rule   inviteRule
	}{
		{c.AllowedUsers, inviter, inviteAllow}, {c.IgnoredUsers, inviter, inviteIgnore}, {c.BlockedUsers, inviter, inviteBlock},
		{c.AllowedServers, server, inviteAllow}, {c.IgnoredServers, server, inviteIgnore}, {c.BlockedServers, server, inviteBlock},
	} {
		for _, g := range r.globs {
			if matchGlob(g, r.target) {
				return r.rule
			}
		}
	}
	return inviteAllow
}

// matchGlob matches a glob of * (any sequence) and ? (one character)
// against the whole of s, case-sensitively (user IDs are). It backtracks
// only to the last *, so a hostile glob costs at most len(glob)*len(s).
func matchGlob(glob, s string) bool {
	g, r := []rune(glob), []rune(s)
	gi, ri, star, mark := 0, 0, -1, 0
	for ri < len(r) {
		switch {
		case gi < len(g) && (g[gi] == '?' || g[gi] == r[ri]):
			gi++
			ri++
		case gi < len(g) && g[gi] == '*':
			star, mark = gi, ri
			gi++
		case star >= 0:
			mark++
			gi, ri = star+1, mark
		default:
			return false
		}
	}
	for gi < len(g) && g[gi] == '*' {
		gi++
	}
	return gi == len(g)
}

// inviteRuleFor is the invitee's rule for an invite from inviter.
func (s *Server) inviteRuleFor(ctx context.Context, invitee, inviter string) (inviteRule, error) {
	c, err := s.inviteConfigOf(ctx, invitee)
	if err != nil {
		return inviteAllow, err
	}
	return c.rule(inviter), nil
}

// checkInviteBlocked refuses an invite the invitee blocks.
func (s *Server) checkInviteBlocked(ctx context.Context, invitee, inviter string) error {
	rule, err := s.inviteRuleFor(ctx, invitee, inviter)
	if err != nil {
		return err
	}
	if rule == inviteBlock {
		return &matrix.Error{Code: "M_INVITE_BLOCKED", Status: 403, Msg: invitee + " does not accept invites from " + inviter}
	}
	return nil
}
