package server

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"hearth/server/rooms"
)

// routes is the whole HTTP surface on one screen.
func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(s.requestLog, cors, s.validQuery)

	r.Get("/.well-known/matrix/server", s.api(s.getWellKnownServer))
	r.Get("/.well-known/matrix/client", s.api(s.getWellKnownClient))
	r.Get("/.well-known/matrix/support", s.api(s.getWellKnownSupport))
	r.Get("/_matrix/client/versions", s.api(s.getVersions))

	// Older clients and tools still call r0; Synapse serves it as an alias
	// of v3, and so does Hearth.
	for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
		r.Route(prefix, s.clientV3Routes)
	}
	r.Route("/_matrix/client/v1", func(r chi.Router) {
		// The OAuth 2.0 API's discovery (oauth_accounts.go); the API itself
		// is served by package oauth under OAuthPath.
		r.Get("/auth_metadata", s.api(s.getAuthMetadata))
		r.Get("/register/m.login.registration_token/validity", s.api(s.getRegistrationTokenValidity))
		// Signing in another device with a one-time token (client_login_token.go).
		r.Post("/login/get_token", s.api(s.postLoginGetToken))
		// Spaces (client_spaces.go): the summary needs no token for rooms anyone may see.
		r.With(s.authOptional).Get("/room_summary/{roomIdOrAlias}", s.api(s.getRoomSummary))
		r.Group(func(r chi.Router) {
			r.Use(s.auth)
			// Relations, threads and jumping to a date (client_relations.go, client_history.go).
			r.Get("/rooms/{roomId}/relations/{eventId}", s.api(s.getRelations))
			r.Get("/rooms/{roomId}/relations/{eventId}/{relType}", s.api(s.getRelations))
			r.Get("/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}", s.api(s.getRelations))
			r.Get("/rooms/{roomId}/threads", s.api(s.getThreads))
			r.Get("/rooms/{roomId}/timestamp_to_event", s.api(s.getTimestampToEvent))
			r.Get("/rooms/{roomId}/hierarchy", s.api(s.getHierarchy))
			r.Get("/mutual_rooms", s.api(s.getMutualRooms))
			// Authenticated media (media.go, media_thumbnail.go, media_preview.go).
			r.Get("/media/config", s.api(s.getMediaConfig))
			r.Get("/media/download/{serverName}/{mediaId}", s.api(s.getDownload))
			r.Get("/media/download/{serverName}/{mediaId}/{fileName}", s.api(s.getDownload))
			r.Get("/media/thumbnail/{serverName}/{mediaId}", s.api(s.getThumbnail))
			r.Get("/media/preview_url", s.api(s.getPreviewURL))
			// Account moderation, for server admins (client_admin.go).
			r.Get("/admin/lock/{userId}", s.api(s.getLockStatus))
			r.Put("/admin/lock/{userId}", s.api(s.putLockStatus))
			r.Get("/admin/suspend/{userId}", s.api(s.getSuspendStatus))
			r.Put("/admin/suspend/{userId}", s.api(s.putSuspendStatus))
		})
	})

	// MSC3266's unstable paths for /room_summary, which clients use until
	// the server lists v1.15.
	r.Route("/_matrix/client/unstable/im.nheko.summary", func(r chi.Router) {
		r.With(s.authOptional).Get("/summary/{roomIdOrAlias}", s.api(s.getRoomSummary))
		r.With(s.authOptional).Get("/rooms/{roomIdOrAlias}/summary", s.api(s.getRoomSummary))
	})

	// MSC2965's unstable path for auth_metadata, which clients released
	// before v1.15 ask.
	r.Get("/_matrix/client/unstable/org.matrix.msc2965/auth_metadata", s.api(s.getAuthMetadata))

	// MSC2666's unstable path for /mutual_rooms, which Synapse served before
	// v1.19.
	r.With(s.auth).Get("/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms", s.api(s.getMutualRooms))
	// MSC4140 delayed events (delayed_events.go): listing needs a token;
	// the actions do not (the delay ID is the secret), as in Synapse.
	r.Route("/_matrix/client/unstable/org.matrix.msc4140/delayed_events", func(r chi.Router) {
		r.With(s.auth).Get("/", s.api(s.getDelayedEvents))
		r.With(s.authOptional).Post("/{delayId}", s.api(s.postDelayedEvent))
		for _, action := range []string{"cancel", "restart", "send"} {
			r.With(s.authOptional).Post("/{delayId}/"+action, s.api(s.postDelayedEventAction(action)))
		}
	})
	// Thread subscriptions (MSC4306, MSC4308; client_thread_subscriptions.go),
	// when experimental_features.msc4306_enabled is on, as in Synapse.
	if s.cfg.ExperimentalFeatures.MSC4306Enabled {
		r.Route("/_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{threadRootId}/subscription", func(r chi.Router) {
			r.Use(s.auth)
			r.Get("/", s.api(s.getThreadSubscription))
			r.Put("/", s.api(s.putThreadSubscription))
			r.Delete("/", s.api(s.deleteThreadSubscription))
		})
		r.With(s.auth).Get("/_matrix/client/unstable/io.element.msc4308/thread_subscriptions", s.api(s.getThreadSubscriptions))
	}
	// Deleting account data (MSC3391; client_account_data.go), when
	// experimental_features.msc3391_enabled is on, as in Synapse.
	if s.cfg.ExperimentalFeatures.MSC3391Enabled {
		r.Route("/_matrix/client/unstable/org.matrix.msc3391/user/{userId}", func(r chi.Router) {
			r.Use(s.auth)
			r.Delete("/account_data/{type}", s.api(s.deleteAccountData))
			r.Delete("/rooms/{roomId}/account_data/{type}", s.api(s.deleteRoomAccountData))
		})
	}
	// MSC4108's rendezvous for QR-code login (client_rendezvous.go): no
	// access token; the session's URL is the secret.
	r.Post(rendezvousPath, s.api(s.postRendezvous))
	r.Get(rendezvousPath+"/{sessionId}", s.api(s.getRendezvous))
	r.Put(rendezvousPath+"/{sessionId}", s.api(s.putRendezvous))
	r.Delete(rendezvousPath+"/{sessionId}", s.api(s.deleteRendezvous))
	// Simplified sliding sync (MSC4186), the sync of Element X and the
	// other matrix-rust-sdk clients (client_slidingsync.go).
	r.With(s.auth).Post("/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", s.api(s.postSlidingSync))

	// The content repository's own prefix: uploads, and the legacy
	// unauthenticated download and thumbnail endpoints Synapse still serves
	// (for media uploaded while enable_authenticated_media was false).
	for _, prefix := range []string{"/_matrix/media/v3", "/_matrix/media/r0"} {
		r.Route(prefix, func(r chi.Router) {
			r.Get("/download/{serverName}/{mediaId}", s.api(s.getLegacyDownload))
			r.Get("/download/{serverName}/{mediaId}/{fileName}", s.api(s.getLegacyDownload))
			r.Get("/thumbnail/{serverName}/{mediaId}", s.api(s.getLegacyThumbnail))
			r.Group(func(r chi.Router) {
				r.Use(s.auth)
				r.Get("/config", s.api(s.getMediaConfig))
				r.Get("/preview_url", s.api(s.getPreviewURL))
				r.With(s.notSuspended).Post("/upload", s.api(s.postUpload))
				r.With(s.notSuspended).Put("/upload/{serverName}/{mediaId}", s.api(s.putUpload))
			})
		})
	}
	r.With(s.auth, s.notSuspended).Post("/_matrix/media/v1/create", s.api(s.postCreateMedia))

	// Federation: this server's keys and the notary (keys_server.go), and
	// the Server-Server API. /version and /openid/userinfo are
	// unauthenticated (spec); every other route goes in the group, behind
	// the X-Matrix check (fedauth.go), and reads the asking server with
	// originFrom.
	r.Route("/_matrix/key/v2", func(r chi.Router) {
		r.Get("/server", s.api(s.getServerKeys))
		r.Get("/server/{keyId}", s.api(s.getServerKeys))
		r.Get("/query/{serverName}", s.api(s.getKeyQuery))
		r.Get("/query/{serverName}/{keyId}", s.api(s.getKeyQuery))
		r.Post("/query", s.api(s.postKeyQuery))
	})
	r.Route("/_matrix/federation/v1", func(r chi.Router) {
		r.Get("/version", s.api(s.getFederationVersion))
		// Asked by the third party an OpenID token was given to (openid.go).
		r.Get("/openid/userinfo", s.api(s.getOpenIDUserinfo))
		r.Group(func(r chi.Router) {
			r.Use(s.federationAuth)
			// Transactions (federation_send.go).
			r.Put("/send/{txnId}", s.api(s.putFederationSend))
			// Memberships through this server (federation_join.go).
			r.Get("/make_join/{roomId}/{userId}", s.api(s.makeHandler(rooms.MembershipJoin)))
			r.Get("/make_leave/{roomId}/{userId}", s.api(s.makeHandler(rooms.MembershipLeave)))
			r.Get("/make_knock/{roomId}/{userId}", s.api(s.makeHandler(rooms.MembershipKnock)))
			r.Put("/send_knock/{roomId}/{eventId}", s.api(s.sendHandler(rooms.MembershipKnock)))
			// The deprecated v1 forms of send_join and send_leave.
			r.Put("/send_join/{roomId}/{eventId}", s.api(s.sendHandlerV1(rooms.MembershipJoin)))
			r.Put("/send_leave/{roomId}/{eventId}", s.api(s.sendHandlerV1(rooms.MembershipLeave)))
			// Reading rooms (federation_serve.go).
			r.Get("/event/{eventId}", s.api(s.getFederationEvent))
			r.Get("/state/{roomId}", s.api(s.stateHandler(false)))
			r.Get("/state_ids/{roomId}", s.api(s.stateHandler(true)))
			r.Get("/event_auth/{roomId}/{eventId}", s.api(s.getFederationEventAuth))
			r.Get("/backfill/{roomId}", s.api(s.getFederationBackfill))
			r.Post("/get_missing_events/{roomId}", s.api(s.postFederationMissingEvents))
			r.Get("/timestamp_to_event/{roomId}", s.api(s.getFederationTimestampToEvent))
			// Queries (federation_misc.go, federation_serve.go).
			r.Get("/query/profile", s.api(s.getFederationProfile))
			r.Get("/query/directory", s.api(s.getFederationDirectory))
			r.Get("/publicRooms", s.api(s.federationPublicRooms))
			r.Post("/publicRooms", s.api(s.federationPublicRooms))
			r.Get("/hierarchy/{roomId}", s.api(s.getFederationHierarchy))
			// End-to-end encryption (federation_keys.go).
			r.Get("/user/devices/{userId}", s.api(s.getFederationUserDevices))
			r.Post("/user/keys/query", s.api(s.postFederationUserKeysQuery))
			r.Post("/user/keys/claim", s.api(s.postFederationUserKeysClaim))
			// The content repository (federation_media.go).
			r.Get("/media/download/{mediaId}", s.api(s.getFederationMediaDownload))
			r.Get("/media/thumbnail/{mediaId}", s.api(s.getFederationMediaThumbnail))
		})
	})
	r.Route("/_matrix/federation/v2", func(r chi.Router) {
		r.Use(s.federationAuth)
		r.Put("/send_join/{roomId}/{eventId}", s.api(s.sendHandler(rooms.MembershipJoin)))
		r.Put("/send_leave/{roomId}/{eventId}", s.api(s.sendHandler(rooms.MembershipLeave)))
		r.Put("/invite/{roomId}/{eventId}", s.api(s.putFederationInvite))
	})

	// Synapse's admin API, for synadm and synapse-admin (synapseAdminRoutes).
	r.Route("/_synapse/admin", s.synapseAdminRoutes)

	// The page the validation emails link to, and clients' submit_url
	// (email_validation.go).
	r.Get(emailSubmitPath, s.api(s.getEmailSubmitToken))
	r.Post(emailSubmitPath, s.api(s.postEmailSubmitToken))

	// The OAuth 2.0 authorisation server and its pages (package oauth).
	if s.oauth != nil {
		r.Mount(OAuthPath, s.oauth)
	}

	// The admin dashboard, when it shares this listener (admin_dashboard).
	if s.dashboard != nil {
		r.Mount("/_hearth/admin", s.dashboard)
	}
	// The first-run page that creates the first admin (web/setup.go).
	if s.setup != nil {
		r.Handle("/_hearth/setup", s.setup)
	}

	r.NotFound(s.api(unrecognized))
	r.MethodNotAllowed(s.api(methodNotAllowed))
	return r
}

// clientV3Routes are the Client-Server API routes under /_matrix/client/v3.
func (s *Server) clientV3Routes(r chi.Router) {
	// Sessions and accounts.
	r.Get("/login", s.api(s.getLogin))
	r.Post("/login", s.api(s.postLogin))
	r.Post("/refresh", s.api(s.postRefresh))
	// SSO, as the OAuth 2.0 aware clients' door to the OAuth pages (oauth_accounts.go).
	r.Get("/login/sso/redirect", s.api(s.getSSORedirect))
	r.Post("/register", s.api(s.postRegister))
	r.Get("/register/available", s.api(s.getRegisterAvailable))
	// Email validation for registration and password reset, with the
	// email section; phone numbers never (client_threepid.go).
	r.Post("/register/email/requestToken", s.api(s.postEmailRequestToken(purposeRegister)))
	r.Post("/register/msisdn/requestToken", s.api(s.postMsisdnDenied))
	r.Post("/account/password/email/requestToken", s.api(s.postEmailRequestToken(purposePassword)))
	r.Post("/account/password/msisdn/requestToken", s.api(s.postMsisdnDenied))
	r.Group(func(r chi.Router) {
		r.Use(s.auth)
		r.Get("/capabilities", s.api(s.getCapabilities))
		r.Post("/logout", s.api(s.postLogout))
		r.Post("/logout/all", s.api(s.postLogoutAll))
		r.Get("/account/whoami", s.api(s.getWhoami))
		r.Post("/account/deactivate", s.api(s.postDeactivate))

		r.Get("/devices", s.api(s.getDevices))
		r.Get("/devices/{deviceId}", s.api(s.getDevice))
		r.Put("/devices/{deviceId}", s.api(s.putDevice))
		r.Delete("/devices/{deviceId}", s.api(s.deleteDevice))
		r.Post("/delete_devices", s.api(s.postDeleteDevices))
		// A user's own sessions, or anyone's for an admin (client_admin.go).
		r.Get("/admin/whois/{userId}", s.api(s.getWhois))
		// Proving who the user is to a third party (openid.go).
		r.Post("/user/{userId}/openid/request_token", s.api(s.postOpenIDRequestToken))

		// Third-party identifiers (client_threepid.go).
		r.Get("/account/3pid", s.api(s.getThreePIDs))
		r.Post("/account/3pid", s.api(s.postThreePID))
		r.Post("/account/3pid/add", s.api(s.postThreePIDAdd))
		r.Post("/account/3pid/bind", s.api(s.postThreePIDBind))
		r.Post("/account/3pid/unbind", s.api(s.postThreePIDUnbind))
		r.Post("/account/3pid/delete", s.api(s.postThreePIDDelete))
		r.Post("/account/3pid/email/requestToken", s.api(s.postEmailRequestToken(purposeAdd)))
		r.Post("/account/3pid/msisdn/requestToken", s.api(s.postMsisdnRequestToken))

		// Features with nothing to offer yet, answered with empty shapes
		// (client_misc.go).
		r.Get("/thirdparty/protocols", s.api(s.getThirdPartyProtocols))
		r.Get("/thirdparty/protocol/{protocol}", s.api(s.getThirdPartyProtocol))
		r.Get("/thirdparty/location", s.api(s.getThirdPartyLookup))
		r.Get("/thirdparty/location/{protocol}", s.api(s.getThirdPartyLookup))
		r.Get("/thirdparty/user", s.api(s.getThirdPartyLookup))
		r.Get("/thirdparty/user/{protocol}", s.api(s.getThirdPartyLookup))
		r.Get("/voip/turnServer", s.api(s.getTurnServer))

		// Rooms: creation, events, state, membership. A suspended account
		// may read and leave, not join or act on others (notSuspended);
		// /send, /state and /redact decide per request.
		r.With(s.notSuspended).Post("/createRoom", s.api(s.postCreateRoom))
		r.Get("/joined_rooms", s.api(s.getJoinedRooms))
		r.Put("/rooms/{roomId}/send/{eventType}/{txnId}", s.api(s.putSendEvent))
		r.Put("/rooms/{roomId}/state/{eventType}", s.api(s.putStateEvent))
		r.Put("/rooms/{roomId}/state/{eventType}/", s.api(s.putStateEvent))
		r.Put("/rooms/{roomId}/state/{eventType}/{stateKey}", s.api(s.putStateEvent))
		r.Get("/rooms/{roomId}/state", s.api(s.getRoomState))
		r.Get("/rooms/{roomId}/state/{eventType}", s.api(s.getStateEvent))
		r.Get("/rooms/{roomId}/state/{eventType}/", s.api(s.getStateEvent))
		r.Get("/rooms/{roomId}/state/{eventType}/{stateKey}", s.api(s.getStateEvent))
		r.Put("/rooms/{roomId}/redact/{eventId}/{txnId}", s.api(s.putRedact))
		r.Get("/rooms/{roomId}/event/{eventId}", s.api(s.getRoomEvent))
		r.Get("/rooms/{roomId}/members", s.api(s.getMembers))
		r.Get("/rooms/{roomId}/joined_members", s.api(s.getJoinedMembers))
		r.With(s.notSuspended).Post("/join/{roomIdOrAlias}", s.api(s.postJoinByIDOrAlias))
		r.With(s.notSuspended).Post("/knock/{roomIdOrAlias}", s.api(s.postKnock))
		r.With(s.notSuspended).Post("/rooms/{roomId}/join", s.api(s.postJoin))
		r.Post("/rooms/{roomId}/leave", s.api(s.postLeave))
		r.Post("/rooms/{roomId}/forget", s.api(s.postForget))
		r.With(s.notSuspended).Post("/rooms/{roomId}/invite", s.api(s.postInvite))
		r.With(s.notSuspended).Post("/rooms/{roomId}/kick", s.api(s.postKick))
		r.With(s.notSuspended).Post("/rooms/{roomId}/ban", s.api(s.postBan))
		r.With(s.notSuspended).Post("/rooms/{roomId}/unban", s.api(s.postUnban))
		r.With(s.notSuspended).Post("/rooms/{roomId}/upgrade", s.api(s.postRoomUpgrade))

		// Reporting content (admin_reports.go).
		r.Post("/rooms/{roomId}/report/{eventId}", s.api(s.postReportEvent))
		r.Post("/rooms/{roomId}/report", s.api(s.postReportRoom))
		r.Post("/users/{userId}/report", s.api(s.postReportUser))

		// Sync and the per-user streams around it.
		r.Get("/sync", s.api(s.getSync))
		r.Post("/user/{userId}/filter", s.api(s.postFilter))
		r.Get("/user/{userId}/filter/{filterId}", s.api(s.getFilter))
		r.Get("/user/{userId}/account_data/{type}", s.api(s.getAccountData))
		r.Put("/user/{userId}/account_data/{type}", s.api(s.putAccountData))
		r.Get("/user/{userId}/rooms/{roomId}/account_data/{type}", s.api(s.getRoomAccountData))
		r.Put("/user/{userId}/rooms/{roomId}/account_data/{type}", s.api(s.putRoomAccountData))
		r.Get("/user/{userId}/rooms/{roomId}/tags", s.api(s.getTags))
		r.Put("/user/{userId}/rooms/{roomId}/tags/{tag}", s.api(s.putTag))
		r.Delete("/user/{userId}/rooms/{roomId}/tags/{tag}", s.api(s.deleteTag))
		r.Post("/rooms/{roomId}/read_markers", s.api(s.postReadMarkers))
		r.Post("/rooms/{roomId}/receipt/{receiptType}/{eventId}", s.api(s.postReceipt))
		r.Get("/pushrules/", s.api(s.getPushRules))
		r.Get("/pushrules/global/", s.api(s.getPushRulesGlobal))
		r.Get("/pushrules/global/{kind}/{ruleId}", s.api(s.getPushRule))
		r.Get("/pushrules/global/{kind}/{ruleId}/enabled", s.api(s.getPushRuleEnabled))
		r.Get("/pushrules/global/{kind}/{ruleId}/actions", s.api(s.getPushRuleActions))
		r.Put("/pushrules/global/{kind}/{ruleId}", s.api(s.putPushRule))
		r.Put("/pushrules/global/{kind}/{ruleId}/enabled", s.api(s.putPushRuleEnabled))
		r.Put("/pushrules/global/{kind}/{ruleId}/actions", s.api(s.putPushRuleActions))
		r.Delete("/pushrules/global/{kind}/{ruleId}", s.api(s.deletePushRule))
		// Pushers and notifications (client_push.go).
		r.Get("/pushers", s.api(s.getPushers))
		r.Post("/pushers/set", s.api(s.postPushersSet))
		r.Get("/notifications", s.api(s.getNotifications))

		// End-to-end encryption, to-device, typing and presence (keys.go,
		// keybackup.go, todevice.go, typing.go, presence.go).
		r.Post("/keys/upload", s.api(s.postKeysUpload))
		r.Post("/keys/query", s.api(s.postKeysQuery))
		r.Post("/keys/claim", s.api(s.postKeysClaim))
		r.Get("/keys/changes", s.api(s.getKeysChanges))
		r.Post("/keys/changes", s.api(s.getKeysChanges)) // mautrix-go sends POST
		r.Post("/keys/device_signing/upload", s.api(s.postDeviceSigningUpload))
		r.Post("/keys/signatures/upload", s.api(s.postSignaturesUpload))
		r.Post("/room_keys/version", s.api(s.postRoomKeysVersion))
		r.Get("/room_keys/version", s.api(s.getRoomKeysVersion))
		r.Get("/room_keys/version/{version}", s.api(s.getRoomKeysVersion))
		r.Put("/room_keys/version/{version}", s.api(s.putRoomKeysVersion))
		r.Delete("/room_keys/version/{version}", s.api(s.deleteRoomKeysVersion))
		for _, p := range []string{"/room_keys/keys", "/room_keys/keys/{roomId}", "/room_keys/keys/{roomId}/{sessionId}"} {
			r.Get(p, s.api(s.getRoomKeys))
			r.Put(p, s.api(s.putRoomKeys))
			r.Delete(p, s.api(s.deleteRoomKeys))
		}
		r.Put("/sendToDevice/{eventType}/{txnId}", s.api(s.putSendToDevice))
		r.Put("/rooms/{roomId}/typing/{userId}", s.api(s.putTyping))
		r.Get("/presence/{userId}/status", s.api(s.getPresence))
		r.Put("/presence/{userId}/status", s.api(s.putPresence))
	})
	// /account/password accepts an unauthenticated request when the UIA
	// flow itself identifies the user (spec: "Changing password"), so it
	// authenticates inside the handler.
	r.Post("/account/password", s.api(s.postPassword))

	// History, aliases, the directories and profiles
	// (client_history.go, client_directory.go, client_profile.go). Looking
	// up aliases, published rooms and profiles needs no access token.
	r.Get("/directory/room/{roomAlias}", s.api(s.getDirectoryRoom))
	r.Get("/directory/list/room/{roomId}", s.api(s.getDirectoryVisibility))
	r.Get("/publicRooms", s.api(s.getPublicRooms))
	r.Get("/profile/{userId}", s.api(s.getProfile))
	r.Get("/profile/{userId}/displayname", s.api(s.getDisplayName))
	r.Get("/profile/{userId}/avatar_url", s.api(s.getAvatarURL))
	r.Get("/profile/{userId}/{keyName}", s.api(s.getProfileField))
	r.Group(func(r chi.Router) {
		r.Use(s.auth)
		r.Get("/rooms/{roomId}/messages", s.api(s.getMessages))
		r.Get("/rooms/{roomId}/context/{eventId}", s.api(s.getContext))
		r.Post("/search", s.api(s.postSearch)) // client_search.go
		r.Put("/directory/room/{roomAlias}", s.api(s.putDirectoryRoom))
		r.Delete("/directory/room/{roomAlias}", s.api(s.deleteDirectoryRoom))
		r.Get("/rooms/{roomId}/aliases", s.api(s.getRoomAliases))
		r.Put("/directory/list/room/{roomId}", s.api(s.putDirectoryVisibility))
		r.Post("/publicRooms", s.api(s.postPublicRooms))
		r.With(s.notSuspended).Put("/profile/{userId}/displayname", s.api(s.putDisplayName))
		r.With(s.notSuspended).Put("/profile/{userId}/avatar_url", s.api(s.putAvatarURL))
		r.With(s.notSuspended).Put("/profile/{userId}/{keyName}", s.api(s.putProfileField))
		r.With(s.notSuspended).Delete("/profile/{userId}/{keyName}", s.api(s.deleteProfileField))
		r.Post("/user_directory/search", s.api(s.postUserDirectorySearch))
	})
}

// synapseAdminRoutes are the Synapse admin API endpoints Hearth serves, under
// /_synapse/admin, with Synapse's paths, parameters and JSON shapes so synadm
// and synapse-admin work unchanged. Shared-secret registration proves itself
// with its HMAC; every other route needs an admin's token.
func (s *Server) synapseAdminRoutes(r chi.Router) {
	r.Get("/v1/register", s.api(s.getAdminRegisterNonce))
	r.Post("/v1/register", s.api(s.postAdminRegister))
	r.Group(func(r chi.Router) {
		r.Use(s.auth, s.adminOnly)
		r.Get("/v1/server_version", s.api(s.getAdminServerVersion))

		// Users, their devices and registration tokens (admin_users.go).
		r.Get("/v2/users", s.api(s.getAdminUsers))
		r.Get("/v3/users", s.api(s.getAdminUsers))
		r.Get("/v2/users/{userId}", s.api(s.getAdminUser))
		r.Put("/v2/users/{userId}", s.api(s.putAdminUser))
		r.Get("/v1/threepid/{medium}/users/{address}", s.api(s.getAdminThreePIDUser))
		r.Post("/v1/deactivate/{userId}", s.api(s.postAdminDeactivate))
		r.Post("/v1/reset_password/{userId}", s.api(s.postAdminResetPassword))
		r.Get("/v1/users/{userId}/admin", s.api(s.getAdminUserAdmin))
		r.Put("/v1/users/{userId}/admin", s.api(s.putAdminUserAdmin))
		r.Get("/v1/whois/{userId}", s.api(s.getAdminWhois))
		r.Put("/v1/suspend/{userId}", s.api(s.putAdminSuspend))
		r.Post("/v1/users/{userId}/login", s.api(s.postAdminLoginAsUser))
		r.Post("/v1/users/{userId}/shadow_ban", s.api(s.postAdminShadowBan))
		r.Delete("/v1/users/{userId}/shadow_ban", s.api(s.deleteAdminShadowBan))
		r.Get("/v1/users/{userId}/override_ratelimit", s.api(s.getAdminRateLimit))
		r.Post("/v1/users/{userId}/override_ratelimit", s.api(s.postAdminRateLimit))
		r.Delete("/v1/users/{userId}/override_ratelimit", s.api(s.deleteAdminRateLimit))
		r.Get("/v1/username_available", s.api(s.getAdminUsernameAvailable))

		r.Get("/v2/users/{userId}/devices", s.api(s.getAdminDevices))
		r.Post("/v2/users/{userId}/devices", s.api(s.postAdminDevice))
		r.Get("/v2/users/{userId}/devices/{deviceId}", s.api(s.getAdminDevice))
		r.Put("/v2/users/{userId}/devices/{deviceId}", s.api(s.putAdminDevice))
		r.Delete("/v2/users/{userId}/devices/{deviceId}", s.api(s.deleteAdminDevice))
		r.Post("/v2/users/{userId}/delete_devices", s.api(s.postAdminDeleteDevices))

		r.Get("/v1/registration_tokens", s.api(s.getAdminRegTokens))
		r.Post("/v1/registration_tokens/new", s.api(s.postAdminRegTokenNew))
		r.Get("/v1/registration_tokens/{token}", s.api(s.getAdminRegToken))
		r.Put("/v1/registration_tokens/{token}", s.api(s.putAdminRegToken))
		r.Delete("/v1/registration_tokens/{token}", s.api(s.deleteAdminRegToken))

		// Rooms (admin_rooms.go, admin_room_delete.go).
		r.Get("/v1/rooms", s.api(s.getAdminRooms))
		r.Get("/v1/rooms/{roomId}", s.api(s.getAdminRoom))
		r.Delete("/v1/rooms/{roomId}", s.api(s.deleteAdminRoomV1))
		r.Get("/v1/rooms/{roomId}/members", s.api(s.getAdminRoomMembers))
		r.Get("/v1/rooms/{roomId}/state", s.api(s.getAdminRoomState))
		r.Get("/v1/rooms/{roomId}/messages", s.api(s.getAdminRoomMessages))
		r.Get("/v1/rooms/{roomId}/context/{eventId}", s.api(s.getAdminRoomContext))
		r.Get("/v1/rooms/{roomId}/timestamp_to_event", s.api(s.getAdminTimestampToEvent))
		r.Get("/v1/rooms/{roomId}/block", s.api(s.getAdminRoomBlock))
		r.Put("/v1/rooms/{roomId}/block", s.api(s.putAdminRoomBlock))
		r.Get("/v1/rooms/{roomId}/forward_extremities", s.api(s.getAdminForwardExtremities))
		r.Delete("/v1/rooms/{roomId}/forward_extremities", s.api(s.deleteAdminForwardExtremities))
		r.Post("/v1/rooms/{roomId}/make_room_admin", s.api(s.postAdminMakeRoomAdmin))
		r.Post("/v1/join/{roomIdOrAlias}", s.api(s.postAdminJoin))
		r.Get("/v1/users/{userId}/joined_rooms", s.api(s.getAdminUserJoinedRooms))
		r.Get("/v1/users/{userId}/memberships", s.api(s.getAdminUserMemberships))

		r.Delete("/v2/rooms/{roomId}", s.api(s.deleteAdminRoomV2))
		r.Get("/v2/rooms/{roomId}/delete_status", s.api(s.getAdminRoomDeleteStatus))
		r.Get("/v2/rooms/delete_status/{deleteId}", s.api(s.getAdminDeleteStatus))

		// Reports, server notices and federation destinations
		// (admin_reports.go, admin_notices.go, admin_federation.go).
		r.Get("/v1/event_reports", s.api(s.getAdminEventReports))
		r.Get("/v1/event_reports/{reportId}", s.api(s.getAdminEventReport))
		r.Delete("/v1/event_reports/{reportId}", s.api(s.deleteAdminEventReport))

		r.Post("/v1/send_server_notice", s.api(s.postAdminServerNotice))
		r.Put("/v1/send_server_notice/{txnId}", s.api(s.postAdminServerNotice))

		r.Get("/v1/federation/destinations", s.api(s.getAdminDestinations))
		r.Get("/v1/federation/destinations/{destination}", s.api(s.getAdminDestination))
		r.Get("/v1/federation/destinations/{destination}/rooms", s.api(s.getAdminDestinationRooms))
		r.Post("/v1/federation/destinations/{destination}/reset_connection", s.api(s.postAdminResetConnection))

		// Media (admin_media.go).
		r.Get("/v1/room/{roomId}/media", s.api(s.getAdminRoomMedia))
		r.Post("/v1/room/{roomId}/media/quarantine", s.api(s.postAdminQuarantineRoomMedia))
		r.Post("/v1/quarantine_media/{roomId}", s.api(s.postAdminQuarantineRoomMedia))
		r.Post("/v1/user/{userId}/media/quarantine", s.api(s.postAdminQuarantineUserMedia))
		r.Get("/v1/users/{userId}/media", s.api(s.getAdminUserMedia))
		r.Delete("/v1/users/{userId}/media", s.api(s.deleteAdminUserMedia))
		r.Get("/v1/media/{serverName}/{mediaId}", s.api(s.getAdminMedia))
		r.Delete("/v1/media/{serverName}/{mediaId}", s.api(s.deleteAdminMedia))
		r.Post("/v1/media/delete", s.api(s.postAdminMediaDelete))
		r.Post("/v1/media/{serverName}/delete", s.api(s.postAdminMediaDelete))
		r.Post("/v1/purge_media_cache", s.api(s.postAdminPurgeMediaCache))
		r.Post("/v1/media/quarantine/{serverName}/{mediaId}", s.api(s.postAdminQuarantineMedia))
		r.Post("/v1/media/unquarantine/{serverName}/{mediaId}", s.api(s.postAdminUnquarantineMedia))
		r.Post("/v1/media/protect/{mediaId}", s.api(s.postAdminProtectMedia))
		r.Post("/v1/media/unprotect/{mediaId}", s.api(s.postAdminUnprotectMedia))
		r.Get("/v1/statistics/users/media", s.api(s.getAdminMediaStatistics))
	})
}
