package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// RequestSigner adds this server's X-Matrix Authorization to a request to
// destination, over its JSON content (nil for none).
type RequestSigner func(req *http.Request, destination string, content []byte) error

// Client makes signed requests to other servers' federation APIs.
type Client struct {
	// HTTP carries the requests; its transport must understand
	// matrix-federation:// URLs.
	HTTP *http.Client
	// Sign authenticates each request as this server.
	Sign RequestSigner
	// MaxResponse bounds a response body (default 50 MiB: a send_join
	// answer for a large room is big).
	MaxResponse int64
	// Web fetches the http(s) URLs a media download may be redirected to
	// (a Location part, media.go); nil: such answers fail.
	Web *http.Client
}

// RemoteError is an error answer from another server.
type RemoteError struct {
	Destination string
	Status      int
	Code        string // errcode, when the body had one
	Msg         string
}

func (e *RemoteError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("%s answered %d %s: %s", e.Destination, e.Status, e.Code, e.Msg)
	}
	return fmt.Sprintf("%s answered %d: %s", e.Destination, e.Status, e.Msg)
}

// Do sends method path (with its query) to destination, with body as JSON
// content when not nil, and decodes a 200 answer into out when not nil.
// Error answers are *RemoteError.
func (c *Client) Do(ctx context.Context, destination, method, path string, query url.Values, body, out any) error {
	var content []byte
	if body != nil {
		var err error
		if content, err = json.Marshal(body); err != nil {
			return fmt.Errorf("federation: encode request to %s: %w", destination, err)
		}
	}
	resp, err := c.send(ctx, destination, method, path, query, content, true)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	limit := c.MaxResponse
	if limit <= 0 {
		limit = 50 << 20
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fmt.Errorf("federation: read answer of %s: %w", destination, err)
	}
	if int64(len(raw)) > limit {
		return fmt.Errorf("federation: answer of %s to %s is larger than %d bytes", destination, path, limit)
	}
	if resp.StatusCode != http.StatusOK {
		return remoteError(destination, resp.StatusCode, raw)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("federation: answer of %s to %s is not the JSON expected: %w", destination, path, err)
	}
	return nil
}

// Stream sends GET path (with its query) to destination, signed unless
// unsigned, and returns a 200 answer for the caller to read and close:
// unlike Do it does not buffer the body, so the caller can bound and
// store a large one (media). Other answers are *RemoteError.
func (c *Client) Stream(ctx context.Context, destination, path string, query url.Values, unsigned bool) (*http.Response, error) {
	resp, err := c.send(ctx, destination, http.MethodGet, path, query, nil, !unsigned)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		// An error body is small JSON; the rest of a larger one is of no use.
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, remoteError(destination, resp.StatusCode, raw)
	}
	return resp, nil
}

// send makes the request, with content as its JSON body when not nil.
func (c *Client) send(ctx context.Context, destination, method, path string, query url.Values, content []byte, sign bool) (*http.Response, error) {
	u := Scheme + "://" + destination + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(content))
	if err != nil {
		return nil, fmt.Errorf("federation: request to %s: %w", destination, err)
	}
	if content != nil {
		req.Header.Set("Content-Type", "application/json")
	} else {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	if sign && c.Sign != nil {
		if err := c.Sign(req, destination, content); err != nil {
			return nil, fmt.Errorf("federation: sign request to %s: %w", destination, err)
		}
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("federation: %s %s to %s: %w", method, path, destination, err)
	}
	return resp, nil
}

// remoteError describes an error answer; raw is its body.
func remoteError(destination string, status int, raw []byte) *RemoteError {
	re := &RemoteError{Destination: destination, Status: status}
	var me struct {
		Code  string `json:"errcode"`
		Error string `json:"error"`
	}
	if json.Unmarshal(raw, &me) == nil && me.Code != "" {
		re.Code, re.Msg = me.Code, me.Error
	} else {
		re.Msg = strings.TrimSpace(string(raw[:min(len(raw), 200)]))
	}
	return re
}

// IsNotFound reports whether err is a remote 404.
func IsNotFound(err error) bool {
	var re *RemoteError
	return errors.As(err, &re) && re.Status == http.StatusNotFound
}

// Transaction is the body of PUT /_matrix/federation/v1/send/{txnId}.
type Transaction struct {
	Origin         string            `json:"origin"`
	OriginServerTS int64             `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
	EDUs           []EDU             `json:"edus,omitempty"`
}

// EDU is an ephemeral data unit.
type EDU struct {
	Type    string          `json:"edu_type"`
	Content json.RawMessage `json:"content"`
}

// SendResponse is the answer to a transaction: per-PDU errors.
type SendResponse struct {
	PDUs map[string]struct {
		Error string `json:"error,omitempty"`
	} `json:"pdus"`
}

// SendTransaction sends a transaction.
func (c *Client) SendTransaction(ctx context.Context, destination, txnID string, txn *Transaction) (*SendResponse, error) {
	var resp SendResponse
	err := c.Do(ctx, destination, http.MethodPut, "/_matrix/federation/v1/send/"+url.PathEscape(txnID), nil, txn, &resp)
	return &resp, err
}

func nowMS(now func() time.Time) int64 { return now().UnixMilli() }
