package server

import (
	"bytes"
	"encoding/json"
	"encoding/json/jsontext"
	jsonv2 "encoding/json/v2"
	"errors"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"hearth/server/matrix"
)

// maxJSONBody bounds a request body read by decodeJSON. Events are capped at
// 65,536 bytes by the spec; other bodies (key uploads, filters) stay well
// under this.
const maxJSONBody = 1 << 20

// decodeJSON reads the body into v. A body that is not JSON, or not an
// object, is M_NOT_JSON; JSON whose fields have the wrong types is
// M_BAD_JSON; an empty body decodes as {} (several endpoints allow it).
// Unknown fields are accepted: clients send extra keys.
func decodeJSON(r *http.Request, v any) error {
	body, err := readJSONObject(r)
	if err != nil {
		return err
	}
	return unmarshalBody(body, v)
}

// readJSONObject reads a request body that decodeJSON accepts: a JSON
// object of valid UTF-8 whose escapes are all characters (an empty body
// reads as {}), with decodeJSON's errors for the rest.
func readJSONObject(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxJSONBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, matrix.TooLarge("request body is larger than %d bytes", maxJSONBody)
		}
		return nil, matrix.NotJSON("could not read body: %v", err)
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		body = []byte("{}")
	}
	// One pass for the common case: JSON of valid UTF-8 whose escapes are
	// all characters (names may repeat; the last counts, as encoding/json
	// and Synapse's parser read them). Otherwise, find out what is wrong.
	if !jsontext.Value(body).IsValid(jsontext.AllowDuplicateNames(true)) {
		switch {
		case !json.Valid(body):
			return nil, matrix.NotJSON("content not JSON")
		case body[0] != '{':
			return nil, matrix.BadJSON("content must be a JSON object")
		case !utf8.Valid(body):
			// encoding/json would silently replace the bad bytes.
			return nil, matrix.NotJSON("content is not valid UTF-8")
		default:
			// An escape of no character: a lone surrogate ("\ud800"),
			// which encoding/json would also replace, and which no event
			// can carry (canonical JSON has no encoding for it).
			return nil, matrix.NotJSON("content has an escape of no Unicode character (a lone surrogate)")
		}
	}
	if body[0] != '{' {
		// Valid JSON of the wrong shape is M_BAD_JSON, as Synapse answers.
		return nil, matrix.BadJSON("content must be a JSON object")
	}
	return body, nil
}

// unmarshalBody decodes a body readJSONObject read into v.
func unmarshalBody(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return matrix.BadJSON("field %q has the wrong type: expected %s", te.Field, te.Type.String())
		}
		return matrix.BadJSON("invalid JSON: %v", err)
	}
	if field, ok := nulString(reflect.ValueOf(v), ""); ok {
		return matrix.BadJSON("field %q contains a NUL character", field)
	}
	return nil
}

// nulString finds a string the server reads from a decoded body (a
// struct's field, a map's key or string value, a list's string) that
// holds a NUL character, and names its field. No user, room, device,
// reason or name has one, and PostgreSQL cannot store one in text, so a
// body with one is refused on both engines alike. What the server only
// carries (event content, kept as raw JSON or an interface value, where
// "\u0000" stays escaped) is not looked into.
func nulString(v reflect.Value, field string) (string, bool) {
	switch v.Kind() {
	case reflect.String:
		return field, strings.IndexByte(v.String(), 0) >= 0
	case reflect.Pointer:
		if v.IsNil() {
			return "", false
		}
		return nulString(v.Elem(), field)
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if f.Anonymous && f.Tag.Get("json") == "" {
				name = field // embedded: its fields are the object's own
			} else if field != "" {
				name = field + "." + name
			}
			if at, ok := nulString(v.Field(i), name); ok {
				return at, true
			}
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return "", false // json.RawMessage and []byte: carried as they are
		}
		for i := range v.Len() {
			if at, ok := nulString(v.Index(i), field); ok {
				return at, true
			}
		}
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return "", false
		}
		for it := v.MapRange(); it.Next(); {
			key := it.Key().String()
			at := key
			if field != "" {
				at = field + "." + key
			}
			if strings.IndexByte(key, 0) >= 0 {
				return at, true
			}
			if at, ok := nulString(it.Value(), at); ok {
				return at, true
			}
		}
	}
	return "", false
}

// writeJSON writes v with status. The JSON is encoded straight into the
// response (the same bytes json.Marshal makes) instead of into one buffer
// of the whole answer first: a /sync or /messages answer, or an initial
// sync of hundreds of rooms, then never lives twice in memory, and many
// answers written at once hold a few KiB each instead of their size. An
// encoding error before anything was written is returned as before (the
// caller answers 500); one after the status went out aborts the
// response (abortAnswer), so the client never takes a cut answer for a
// whole one.
// Errors writing are the client's problem.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	jw := &jsonResponse{w: w, status: status}
	err := jsonv2.MarshalWrite(jw, v, json.DefaultOptionsV1())
	if err == nil || jw.failed {
		return nil
	}
	if jw.started {
		abortAnswer(err)
	}
	return err
}

// answerAborted is what abortAnswer panics with: requestLog logs err and
// cuts the connection (http.ErrAbortHandler), so the client never takes
// the part it got for a whole answer and the operator learns why.
type answerAborted struct{ err error }

// abortAnswer ends a response that failed after its first bytes went out.
func abortAnswer(err error) { panic(answerAborted{err}) }

// jsonResponse sends the header with the first bytes of the body.
type jsonResponse struct {
	w               http.ResponseWriter
	status          int
	started, failed bool
}

func (j *jsonResponse) Write(p []byte) (int, error) {
	if !j.started {
		j.started = true
		j.w.Header().Set("Content-Type", "application/json")
		j.w.WriteHeader(j.status)
	}
	n, err := j.w.Write(p)
	if err != nil {
		j.failed = true
	}
	return n, err
}

// pathParam returns a path parameter unescaped; one that is not UTF-8,
// or has a NUL character, is the client's error (400 M_INVALID_PARAM).
// chi matches on the raw (escaped) path when one is set, so
// "%40alice%3Aexample.org" arrives here still escaped.
func pathParam(r *http.Request, name string) (string, error) {
	raw := chi.URLParam(r, name)
	v, err := url.PathUnescape(raw)
	if err != nil {
		return "", matrix.InvalidParam("path parameter %s is not validly escaped", name)
	}
	if !utf8.ValidString(v) {
		return "", matrix.InvalidParam("path parameter %s is not valid UTF-8", name)
	}
	if strings.IndexByte(v, 0) >= 0 {
		// No ID, type or key has one, and PostgreSQL cannot look one up.
		return "", matrix.InvalidParam("path parameter %s contains a NUL character", name)
	}
	return v, nil
}

// queryBool reads a boolean query parameter ("true"/"false"; Synapse also
// accepts "1"/"0").
func queryBool(r *http.Request, name string, def bool) (bool, error) {
	return boolParam(r.URL.Query(), name, def)
}

// boolParam is queryBool on a query already parsed: a handler reading
// several parameters parses the query once.
func boolParam(q url.Values, name string, def bool) (bool, error) {
	v := q.Get(name)
	switch strings.ToLower(v) {
	case "":
		return def, nil
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, matrix.InvalidParam("query parameter %s must be true or false", name)
}
