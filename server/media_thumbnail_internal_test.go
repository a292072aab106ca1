package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"net/http"
	"runtime"
	"testing"

	"hearth/server/matrix"
)

// Thumbnailing hostile images: decompression bombs (small files declaring
// huge dimensions) are refused from their headers before anything is
// decoded, truncated and corrupt files are a 400, and FuzzThumbnail feeds
// the decoders whatever the fuzzer makes.

// TinyWebP is a 1×1 lossless WebP (golang.org/x/image/webp decodes it; Go
// has no WebP encoder).
const TinyWebP = "RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"

func gradient(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{uint8(x * 7), uint8(y * 5), 99, 255})
		}
	}
	return img
}

// SmallImages are one small valid image per thumbnailed format.
func SmallImages(t testing.TB) map[string][]byte {
	t.Helper()
	var p, j, g bytes.Buffer
	if err := png.Encode(&p, gradient(40, 30)); err != nil {
		t.Fatal(err)
	}
	if err := jpeg.Encode(&j, gradient(40, 30), nil); err != nil {
		t.Fatal(err)
	}
	pal := image.NewPaletted(image.Rect(0, 0, 40, 30), []color.Color{color.Black, color.White})
	if err := gif.Encode(&g, pal, nil); err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{"image/png": p.Bytes(), "image/jpeg": j.Bytes(), "image/gif": g.Bytes(), "image/webp": []byte(TinyWebP)}
}

// ThumbnailBombs are small files of each format whose headers declare far
// more pixels than maxThumbSourcePixels (every one of them would need
// gigabytes to decode).
func ThumbnailBombs(t testing.TB) map[string][]byte {
	t.Helper()
	small := SmallImages(t)
	out := map[string][]byte{}

	// PNG: an IHDR of 100000×100000 RGBA (40 GB decoded) with a valid CRC,
	// then the small image's IDAT and IEND.
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], 100_000)
	binary.BigEndian.PutUint32(ihdr[4:], 100_000)
	ihdr[8], ihdr[9] = 8, 6
	var p bytes.Buffer
	p.WriteString("\x89PNG\r\n\x1a\n")
	writeChunk := func(typ string, data []byte) {
		_ = binary.Write(&p, binary.BigEndian, uint32(len(data)))
		p.WriteString(typ)
		p.Write(data)
		_ = binary.Write(&p, binary.BigEndian, crc32.ChecksumIEEE(append([]byte(typ), data...)))
	}
	writeChunk("IHDR", ihdr)
	rest := small["image/png"][8+25:] // after the signature and the real IHDR chunk
	p.Write(rest)
	out["image/png"] = p.Bytes()

	// JPEG: the small one's frame header (SOF0) patched to 65500×65500.
	j := bytes.Clone(small["image/jpeg"])
	sof := bytes.Index(j, []byte{0xff, 0xc0})
	if sof < 0 {
		t.Fatal("no SOF0 in the test JPEG")
	}
	binary.BigEndian.PutUint16(j[sof+5:], 65500) // height
	binary.BigEndian.PutUint16(j[sof+7:], 65500) // width
	out["image/jpeg"] = j

	// GIF: the logical screen patched to 65535×65535.
	g := bytes.Clone(small["image/gif"])
	binary.LittleEndian.PutUint16(g[6:], 65535)
	binary.LittleEndian.PutUint16(g[8:], 65535)
	out["image/gif"] = g

	// WebP: the VP8L header of the 1×1 image patched to 16384×16384 (the
	// format's maximum: 14 bits each for width-1 and height-1).
	w := []byte(TinyWebP)
	binary.LittleEndian.PutUint32(w[21:], 0x3fff|0x3fff<<14|1<<28)
	out["image/webp"] = w

	// WebP again: an extended file (VP8X) whose canvas is 1×1, holding a
	// lossless bitstream of 16384×16384. The canvas is all DecodeConfig
	// reports; the decoder allocates the bitstream's size.
	vp8l := bytes.Clone(w[12:])
	var x bytes.Buffer
	x.WriteString("RIFF")
	_ = binary.Write(&x, binary.LittleEndian, uint32(4+18+len(vp8l)))
	x.WriteString("WEBPVP8X")
	_ = binary.Write(&x, binary.LittleEndian, uint32(10))
	x.Write([]byte{0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0}) // alpha; canvas 1×1
	x.Write(vp8l)
	out["image/webp canvas"] = x.Bytes()
	return out
}

func TestThumbnailBombsRefusedFromHeaders(t *testing.T) {
	for typ, data := range ThumbnailBombs(t) {
		t.Run(typ, func(t *testing.T) {
			if _, _, err := image.DecodeConfig(bytes.NewReader(data)); err != nil {
				t.Fatalf("the crafted %s does not even parse: %v", typ, err)
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := renderThumbnail(bytes.NewReader(data), thumbSizes[1], "image/png")
			runtime.ReadMemStats(&after)
			var me *matrix.Error
			if !errors.As(err, &me) || me.Code != "M_TOO_LARGE" {
				t.Fatalf("got %v, want M_TOO_LARGE", err)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
				t.Fatalf("refusing it allocated %d bytes: it was decoded", grew)
			}
		})
	}
}

func TestThumbnailHostileImages(t *testing.T) {
	for typ, data := range SmallImages(t) {
		t.Run(typ, func(t *testing.T) {
			out, err := renderThumbnail(bytes.NewReader(data), thumbSizes[0], "image/png")
			if err != nil {
				t.Fatalf("the valid image: %v", err)
			}
			if _, err := png.Decode(bytes.NewReader(out)); err != nil {
				t.Fatalf("thumbnail is not a PNG: %v", err)
			}
			for name, bad := range map[string][]byte{
				"truncated":      data[:len(data)/2],
				"header only":    data[:min(len(data), 16)],
				"body scrambled": scramble(data),
			} {
				_, err := renderThumbnail(bytes.NewReader(bad), thumbSizes[0], "image/png")
				var me *matrix.Error
				if err == nil {
					continue // some scrambles still decode: fine, as long as nothing panics
				}
				if !errors.As(err, &me) || me.HTTPStatus() != http.StatusBadRequest && me.HTTPStatus() != http.StatusRequestEntityTooLarge {
					t.Fatalf("%s: got %v, want a 400", name, err)
				}
			}
		})
	}
}

// scramble flips bytes after the first 32 (past the headers).
func scramble(data []byte) []byte {
	out := bytes.Clone(data)
	for i := 32; i < len(out); i += 3 {
		out[i] ^= 0x5a
	}
	return out
}

// FuzzThumbnail: any bytes are either refused with a 400 or 413, or
// become a thumbnail that decodes and fits the requested box.
func FuzzThumbnail(f *testing.F) {
	for _, data := range SmallImages(f) {
		f.Add(data, uint8(0))
	}
	for _, data := range ThumbnailBombs(f) {
		f.Add(data, uint8(1))
	}
	f.Add([]byte("GIF89a\x01\x00\x01\x00"), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, si uint8) {
		size := thumbSizes[int(si)%len(thumbSizes)]
		outType := "image/png"
		if si&0x80 != 0 {
			outType = "image/jpeg"
		}
		out, err := renderThumbnail(bytes.NewReader(data), size, outType)
		if err != nil {
			var me *matrix.Error
			if !errors.As(err, &me) {
				t.Fatalf("refused with %v: not a Matrix error (a 500)", err)
			}
			if st := me.HTTPStatus(); st != http.StatusBadRequest && st != http.StatusRequestEntityTooLarge {
				t.Fatalf("refused with status %d", st)
			}
			return
		}
		cfg, format, err := image.DecodeConfig(bytes.NewReader(out))
		if err != nil || "image/"+format != outType {
			t.Fatalf("thumbnail does not decode as %s: %s %v", outType, format, err)
		}
		if cfg.Width < 1 || cfg.Height < 1 || cfg.Width > size.w || cfg.Height > size.h {
			t.Fatalf("thumbnail %dx%d for a %dx%d box", cfg.Width, cfg.Height, size.w, size.h)
		}
	})
}
