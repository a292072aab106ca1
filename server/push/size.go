package push

// userStateSize and roomStateSize estimate the push caches' entries
// (push_users, push_rooms) for the dashboard. The stored rules a
// userState points at are counted by the storage cache that holds them.
func userStateSize(userID string, u *userState) int64 {
	n := int64(16+len(userID)) + 64
	if u.rules != nil {
		for _, r := range u.rules.rules {
			n += 160 + int64(len(r.kind)+len(r.id)+len(r.eventType)) + 96*int64(len(r.conds))
		}
	}
	for k := range u.ignored {
		n += 40 + int64(len(k))
	}
	return n
}

func roomStateSize(_ int64, r *roomState) int64 {
	n := int64(8 + 160)
	for _, u := range r.local {
		n += 16 + int64(len(u))
	}
	for k, v := range r.names {
		n += 56 + int64(len(k)+len(v))
	}
	for k := range r.notif {
		n += 40 + int64(len(k))
	}
	if r.power != nil {
		for k := range r.power.Users {
			n += 40 + int64(len(k))
		}
		for k := range r.power.Events {
			n += 40 + int64(len(k))
		}
	}
	return n
}
