package server_test

import (
	"testing"

	"hearth/config"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

func TestWellKnownSupport(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		// Unconfigured: 404, as the spec has it for a server with nothing to say.
		plain := servertest.Start(t, e)
		acctDo(t, plain, "GET", "/.well-known/matrix/support", "", nil).want(t, 404, "M_NOT_FOUND")

		b := servertest.Start(t, e, func(c *config.Config) {
			c.WellKnownSupport = config.WellKnownSupport{
				Contacts: []config.SupportContact{
					{MatrixID: "@admin:hearth.test", EmailAddress: "admin@hearth.test", Role: "m.role.admin"},
					{EmailAddress: "security@hearth.test", Role: "m.role.security"},
				},
				SupportPage: "https://hearth.test/help",
			}
		})
		r := acctDo(t, b, "GET", "/.well-known/matrix/support", "", nil)
		r.want(t, 200, "")
		contacts, _ := r.body["contacts"].([]any)
		if len(contacts) != 2 || r.body["support_page"] != "https://hearth.test/help" {
			t.Fatalf("support: %v", r.body)
		}
		first, second := contacts[0].(map[string]any), contacts[1].(map[string]any)
		if first["matrix_id"] != "@admin:hearth.test" || first["email_address"] != "admin@hearth.test" || first["role"] != "m.role.admin" {
			t.Fatalf("first contact: %v", first)
		}
		if _, ok := second["matrix_id"]; ok || second["role"] != "m.role.security" {
			t.Fatalf("second contact: %v", second)
		}
		if r.header.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("no CORS header: browsers' clients read this file too")
		}
	})
}
