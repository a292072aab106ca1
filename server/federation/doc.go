// Package federation is Hearth's outbound side of the Server-Server API:
// server discovery (resolve.go), the transport that dials what discovery
// finds with TLS and address filtering (transport.go; the filter is package
// netguard, shared with URL previews), the key ring of
// other servers' signing keys (keyring.go), request signing and checking
// (xmatrix.go), the typed client (client.go) and the per-destination send
// queue (queue.go). The handlers that answer other servers live beside the
// other routes in package server; the room pipeline they feed is package
// timeline. This package imports neither: it satisfies their interfaces
// (timeline.Fetcher, timeline.Observer, rooms.KeyLookup) structurally.
//
// Requests to another server are made with an *http.Client whose transport
// understands URLs of the form
//
//	matrix-federation://<server name>/<path>
//
// (as Synapse's federation agent does): the transport resolves the server
// name per the spec ("Resolving server names"), dials the result, and sets
// the Host header and TLS server name the resolution step calls for.
package federation

// Scheme is the URL scheme of requests to other servers' federation APIs.
const Scheme = "matrix-federation"
