package storage

import (
	"context"
	"fmt"
	"strings"
)

// PublicRoomIDs lists the rooms published in the room directory (not
// blocked ones).
func (s *Store) PublicRoomIDs(ctx context.Context) ([]string, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT room_id FROM rooms WHERE is_public = 1 AND blocked = 0 ORDER BY room_id`)
	if err != nil {
		return nil, fmt.Errorf("storage: public rooms: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// RoomStateSummary is the current state a room directory entry shows.
type RoomStateSummary struct {
	// Content holds the content of each current state event with an empty
	// state key among the requested types.
	Content       map[string][]byte
	JoinedMembers int
}

// RoomSummaries reads, for each room, the content of its current state
// events of types (state key "") and its joined member count.
func (s *Store) RoomSummaries(ctx context.Context, roomIDs []string, types []string) (map[string]*RoomStateSummary, error) {
	out := make(map[string]*RoomStateSummary, len(roomIDs))
	for _, id := range roomIDs {
		out[id] = &RoomStateSummary{Content: map[string][]byte{}}
	}
	for start := 0; start < len(roomIDs); start += 400 {
		chunk := roomIDs[start:min(start+400, len(roomIDs))]
		args := make([]any, 0, len(chunk)+len(types))
		for _, id := range chunk {
			args = append(args, id)
		}
		rows, err := s.read.QueryContext(ctx, `SELECT room_id, COUNT(*) FROM current_state
			WHERE room_id IN (`+inList(1, len(chunk))+`) AND type = 'm.room.member' AND membership = 'join' GROUP BY room_id`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: joined counts: %w", err)
		}
		for rows.Next() {
			var id string
			var n int
			if err := rows.Scan(&id, &n); err != nil {
				rows.Close()
				return nil, err
			}
			out[id].JoinedMembers = n
		}
		rows.Close()
		if len(types) == 0 {
			continue
		}
		for _, t := range types {
			args = append(args, t)
		}
		rows, err = s.read.QueryContext(ctx, `SELECT c.room_id, c.type, e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
			WHERE c.room_id IN (`+inList(1, len(chunk))+`) AND c.type IN (`+inList(len(chunk)+1, len(types))+`) AND c.state_key = ''`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: room summaries: %w", err)
		}
		for rows.Next() {
			var id, typ, js string
			if err := rows.Scan(&id, &typ, &js); err != nil {
				rows.Close()
				return nil, err
			}
			out[id].Content[typ] = []byte(js)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// DirectoryUser is one user directory search result.
type DirectoryUser struct {
	UserID      string
	DisplayName string
	AvatarURL   string
}

// SearchUserDirectory finds users visible to searcher (spec: "User
// directory"): those joined to a room the searcher is joined to, and those
// joined to a room published in the room directory. term matches the user
// ID or the display name, case-insensitively. It returns up to limit+1
// rows so the caller can tell whether the result was limited.
func (s *Store) SearchUserDirectory(ctx context.Context, searcher, term string, limit int) ([]DirectoryUser, error) {
	like := "%" + escapeLike(strings.ToLower(term)) + "%"
	rows, err := s.read.QueryContext(ctx, `SELECT DISTINCT m.state_key, COALESCE(u.displayname, ''), COALESCE(u.avatar_url, '')
		FROM current_state m LEFT JOIN users u ON u.user_id = m.state_key
		WHERE m.type = 'm.room.member' AND m.membership = 'join'
			AND (m.room_id IN (SELECT room_id FROM current_state WHERE type = 'm.room.member' AND state_key = $1 AND membership = 'join')
				OR m.room_id IN (SELECT room_id FROM rooms WHERE is_public = 1 AND blocked = 0))
			AND (u.deactivated IS NULL OR u.deactivated = 0)
			AND m.state_key <> $1
			AND (LOWER(m.state_key) LIKE $2 ESCAPE '\' OR LOWER(COALESCE(u.displayname, '')) LIKE $2 ESCAPE '\')
		ORDER BY m.state_key LIMIT $3`, searcher, like, limit+1)
	if err != nil {
		return nil, fmt.Errorf("storage: search user directory: %w", err)
	}
	defer rows.Close()
	var out []DirectoryUser
	for rows.Next() {
		var u DirectoryUser
		if err := rows.Scan(&u.UserID, &u.DisplayName, &u.AvatarURL); err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// escapeLike escapes LIKE's wildcards with a backslash.
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
