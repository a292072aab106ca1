package backup

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"strings"
	"testing"
)

// archive builds a gzipped tar of files (in order), with manifest as its
// last entry when it is not nil.
func archive(t *testing.T, files [][2]string, manifest *Manifest) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	add := func(name string, body []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Size: int64(len(body)), Mode: 0o600, Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	for _, f := range files {
		add(f[0], []byte(f[1]))
	}
	if manifest != nil {
		raw, _ := json.Marshal(manifest)
		add(manifestName, raw)
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// manifestOf is a correct manifest for files.
func manifestOf(files [][2]string) *Manifest {
	m := &Manifest{Format: Format, ServerName: "hs", Engine: "sqlite", Files: map[string]File{}}
	for _, f := range files {
		sum := sha256.Sum256([]byte(f[1]))
		m.Files[f[0]] = File{Size: int64(len(f[1])), SHA256: hex.EncodeToString(sum[:])}
	}
	return m
}

func TestExtractChecks(t *testing.T) {
	good := [][2]string{{keyName, "ed25519 a_bcd key"}, {databaseName, "db"}, {"media/local_content/ab/cd/ef", "photo"}}
	m := manifestOf(good)
	if got, err := ReadManifest(bytes.NewReader(archive(t, good, m))); err != nil || got.MediaFiles() != 1 || !got.HasDatabase() {
		t.Fatalf("good archive: %+v %v", got, err)
	}
	tampered := [][2]string{good[0], good[1], {"media/local_content/ab/cd/ef", "phot0"}}
	extra := append(append([][2]string(nil), good...), [2]string{"media/x", "smuggled"})
	tests := []struct {
		name  string
		files [][2]string
		m     *Manifest
		want  string
	}{
		{"changed file", tampered, m, "checksum mismatch"},
		{"missing file", good[:2], m, "missing"},
		{"extra file", extra, m, "not in the manifest"},
		{"no manifest", good, nil, "no manifest"},
		{"parent path", [][2]string{{"media/../../etc/passwd", "x"}}, m, "unsafe name"},
		{"absolute path", [][2]string{{"/etc/passwd", "x"}}, m, "unsafe name"},
		{"unknown top", [][2]string{{"bin/hearth", "x"}}, m, "unexpected file"},
		{"newer format", good, &Manifest{Format: Format + 1, Files: m.Files}, "format"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opened := []string{}
			_, err := extract(bytes.NewReader(archive(t, tc.files, tc.m)), func(name string, _ fs.FileMode) (io.WriteCloser, error) {
				opened = append(opened, name)
				return nopWriter{}, nil
			})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			for _, n := range opened {
				if strings.Contains(n, "..") || strings.HasPrefix(n, "/") {
					t.Errorf("unsafe name %q reached open", n)
				}
			}
		})
	}
}
