package storage_test

import (
	"context"
	"slices"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// TestEventReportsFilterIgnoresCase: the user_id and room_id filters match
// substrings regardless of case on both engines (LIKE alone ignores case
// on SQLite only), and LIKE's wildcards in a filter match themselves.
func TestEventReportsFilterIgnoresCase(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		for i, r := range []storage.EventReport{
			{RoomID: "!CoffeeRoom:hs", EventID: "$a", UserID: "@Alice:hs"},
			{RoomID: "!tea_room:hs", EventID: "$b", UserID: "@bob:hs"},
			{RoomID: "!teaXroom:hs", EventID: "$c", UserID: "@carol:hs"},
		} {
			r.ReceivedTS = int64(i + 1)
			if err := st.AddEventReport(ctx, &r); err != nil {
				t.Fatal(err)
			}
		}
		for _, tc := range []struct {
			name string
			f    storage.EventReportFilter
			want []string // event IDs, oldest first
		}{
			{"user, lower case", storage.EventReportFilter{UserID: "alice"}, []string{"$a"}},
			{"user, upper case", storage.EventReportFilter{UserID: "ALICE"}, []string{"$a"}},
			{"user, as stored", storage.EventReportFilter{UserID: "@Alice:hs"}, []string{"$a"}},
			{"room, lower case", storage.EventReportFilter{RoomID: "coffeeroom"}, []string{"$a"}},
			{"room, mixed case", storage.EventReportFilter{RoomID: "cOFFEEr"}, []string{"$a"}},
			{"user and room", storage.EventReportFilter{UserID: "BOB", RoomID: "TEA"}, []string{"$b"}},
			{"underscore is literal", storage.EventReportFilter{RoomID: "tea_room"}, []string{"$b"}},
			{"percent is literal", storage.EventReportFilter{UserID: "%"}, nil},
			{"no filter", storage.EventReportFilter{}, []string{"$a", "$b", "$c"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tc.f.Limit = 10
				got, total, err := st.EventReports(ctx, tc.f)
				if err != nil {
					t.Fatal(err)
				}
				var ids []string
				for _, r := range got {
					ids = append(ids, r.EventID)
				}
				if !slices.Equal(ids, tc.want) || total != len(tc.want) {
					t.Fatalf("got %v (total %d), want %v", ids, total, tc.want)
				}
			})
		}
	})
}
