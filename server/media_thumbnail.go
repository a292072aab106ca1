package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp" // registers the WebP decoder

	"hearth/server/matrix"
)

// Thumbnails (spec: "Thumbnails"). Only the five sizes the spec recommends
// are ever generated, so a client cannot make the server render and cache
// an unbounded number of sizes; a request is answered with the smallest
// one at least as large as asked for (Synapse without dynamic_thumbnails).
// They are decoded and resampled in pure Go (golang.org/x/image), cached
// on disk next to the media, and never upscaled. Animated images get their
// first frame.

type thumbSize struct {
	w, h   int
	method string // "crop" or "scale"
}

var thumbSizes = []thumbSize{{32, 32, "crop"}, {96, 96, "crop"}, {320, 240, "scale"}, {640, 480, "scale"}, {800, 600, "scale"}}

// maxThumbSourcePixels refuses to decode huge images (a decompression bomb
// would otherwise cost gigabytes), like Synapse's max_image_pixels.
const maxThumbSourcePixels = 32_000_000

// thumbnailable are the source types decoded here.
var thumbnailable = map[string]bool{"image/jpeg": true, "image/png": true, "image/gif": true, "image/webp": true}

// pickThumbSize chooses the generated size that serves a request.
func pickThumbSize(w, h int, method string) thumbSize {
	var best, largest *thumbSize
	for i := range thumbSizes {
		t := &thumbSizes[i]
		if t.method != method {
			continue
		}
		if largest == nil || t.w*t.h > largest.w*largest.h {
			largest = t
		}
		// The generated box contains the requested one, so the result is
		// never smaller than asked for (spec: "MUST NOT return a smaller
		// thumbnail than requested, unless the original content makes that
		// impossible").
		ok := t.w >= w && t.h >= h
		if ok && (best == nil || t.w*t.h < best.w*best.h) {
			best = t
		}
	}
	if best == nil {
		best = largest
	}
	return *best
}

// GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}
func (s *Server) getThumbnail(w http.ResponseWriter, r *http.Request) error {
	return s.thumbnail(w, r, true)
}

// GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}
func (s *Server) getLegacyThumbnail(w http.ResponseWriter, r *http.Request) error {
	return s.thumbnail(w, r, false)
}

func (s *Server) thumbnail(w http.ResponseWriter, r *http.Request, authenticated bool) error {
	size, err := thumbParams(r)
	if err != nil {
		return err
	}
	m, err := s.servableMedia(r, authenticated)
	if err != nil {
		return err
	}
	data, outType, err := s.thumbnailOf(r, m, size)
	if err != nil {
		return err
	}
	setMediaHeaders(w, outType, "thumbnail."+outType[len("image/"):])
	setMediaCache(w, authenticated)
	http.ServeContent(w, r, "", time.UnixMilli(m.CreatedTS), bytes.NewReader(data))
	return nil
}

// thumbParams reads width, height and method, and picks the size that
// serves them.
func thumbParams(r *http.Request) (thumbSize, error) {
	q := r.URL.Query()
	var dims [2]int
	for i, name := range []string{"width", "height"} {
		v := q.Get(name)
		if v == "" {
			return thumbSize{}, matrix.MissingParam("missing %s", name)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return thumbSize{}, matrix.InvalidParam("%s must be a positive integer", name)
		}
		dims[i] = n
	}
	method := q.Get("method")
	switch method {
	case "":
		method = "scale"
	case "scale", "crop":
	default:
		return thumbSize{}, matrix.InvalidParam("method must be crop or scale")
	}
	return pickThumbSize(dims[0], dims[1], method), nil
}

// thumbnailOf returns a thumbnail of m at size and its type: from the
// cache next to m, or rendered and cached.
func (s *Server) thumbnailOf(r *http.Request, m *mediaFile, size thumbSize) ([]byte, string, error) {
	base := m.ContentType
	if i := bytes.IndexByte([]byte(base), ';'); i >= 0 {
		base = base[:i]
	}
	if !thumbnailable[base] {
		return nil, "", &matrix.Error{Code: "M_UNKNOWN", Msg: "cannot generate a thumbnail for this type of content", Status: http.StatusBadRequest}
	}
	outType := "image/png"
	if base == "image/jpeg" {
		outType = "image/jpeg"
	}
	path := filepath.Join(m.thumbDir, fmt.Sprintf("%dx%d-%s", size.w, size.h, size.method))
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		data, err = s.makeThumbnail(r, m, size, outType, path)
	}
	var me *matrix.Error
	if errors.As(err, &me) && me.Code == "M_TOO_LARGE" && m.remote {
		// Spec: 502 for remote content too large to thumbnail.
		c := *me
		c.Status = http.StatusBadGateway
		return nil, "", &c
	}
	if err != nil {
		return nil, "", err
	}
	return data, outType, nil
}

// makeThumbnail renders one size and caches it (best effort).
func (s *Server) makeThumbnail(r *http.Request, m *mediaFile, size thumbSize, outType, path string) ([]byte, error) {
	select {
	case s.media.thumbSem <- struct{}{}:
		defer func() { <-s.media.thumbSem }()
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
	f, err := os.Open(m.path)
	if err != nil {
		return nil, fmt.Errorf("media: open %s for thumbnail: %w", m.ref, err)
	}
	defer f.Close()
	data, err := renderThumbnail(f, size, outType)
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(path, data); err != nil {
		logFrom(r.Context(), s.log).Warn("thumbnail not cached", "media", m.ref, "err", err)
	}
	return data, nil
}

// renderThumbnail decodes src and renders it at size, encoded as outType.
func renderThumbnail(src io.ReadSeeker, size thumbSize, outType string) ([]byte, error) {
	cannot := &matrix.Error{Code: "M_UNKNOWN", Msg: "cannot generate a thumbnail for this image", Status: http.StatusBadRequest}
	// The EXIF block sits in the first segments; 64 KiB holds it.
	head := make([]byte, 64<<10)
	n, _ := io.ReadFull(src, head)
	orientation := jpegOrientation(head[:n])
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	cfg, format, err := image.DecodeConfig(src)
	if err != nil {
		return nil, cannot
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, cannot
	}
	tooLarge := matrix.TooLarge("the image is too large to thumbnail")
	if int64(cfg.Width)*int64(cfg.Height) > maxThumbSourcePixels {
		// Spec: 413 M_TOO_LARGE, "the local content is too large for the
		// server to thumbnail".
		return nil, tooLarge
	}
	if format == "webp" {
		// An extended WebP's header gives the canvas size, but the decoder
		// allocates what the bitstream inside declares, up to 16384×16384:
		// a 1×1 canvas may hide a 268-megapixel frame.
		if _, err := src.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		px, err := webpBitstreamPixels(src)
		if err != nil {
			return nil, cannot
		}
		if px > maxThumbSourcePixels {
			return nil, tooLarge
		}
	}
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	var img image.Image
	if format == "gif" {
		img, err = gif.Decode(src) // the first frame
	} else {
		img, _, err = image.Decode(src)
	}
	if err != nil {
		return nil, cannot
	}
	// Scale in stored orientation (for a quarter turn, into the swapped
	// box), then turn the small result upright.
	if orientation >= 5 {
		size.w, size.h = size.h, size.w
	}
	out := orient(scaleImage(img, size), orientation)
	var b bytes.Buffer
	if outType == "image/jpeg" {
		err = jpeg.Encode(&b, out, &jpeg.Options{Quality: 80})
	} else {
		err = png.Encode(&b, out)
	}
	return b.Bytes(), err
}

// webpBitstreamPixels walks a WebP file's chunks and returns the largest
// pixel count any of its image bitstreams (VP8 lossy, VP8L lossless)
// declares: what decoding it would allocate, whatever the canvas says.
// RIFF chunks: a FourCC, a little-endian length, the data padded to even.
func webpBitstreamPixels(r io.ReadSeeker) (int64, error) {
	var riff [12]byte
	if _, err := io.ReadFull(r, riff[:]); err != nil || string(riff[0:4]) != "RIFF" || string(riff[8:12]) != "WEBP" {
		return 0, errors.New("webp: not a RIFF WEBP file")
	}
	var most int64
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(r, hdr[:]); err == io.EOF {
			return most, nil
		} else if err != nil {
			return most, nil // trailing bytes: the decoder judges them
		}
		size := int64(binary.LittleEndian.Uint32(hdr[4:]))
		skip := size + size&1 // the data and its padding byte
		var w, h int64
		switch string(hdr[0:4]) {
		case "VP8 ":
			// Frame tag (3 bytes), start code 9d 01 2a, then 14-bit width
			// and height (the top 2 bits of each are a scale).
			var b [10]byte
			if size < 10 {
				return 0, errors.New("webp: short VP8 chunk")
			}
			if _, err := io.ReadFull(r, b[:]); err != nil {
				return 0, err
			}
			w, h = int64(binary.LittleEndian.Uint16(b[6:])&0x3fff), int64(binary.LittleEndian.Uint16(b[8:])&0x3fff)
			skip -= 10
		case "VP8L":
			// Signature 0x2f, then 14 bits of width-1 and 14 of height-1.
			var b [5]byte
			if size < 5 {
				return 0, errors.New("webp: short VP8L chunk")
			}
			if _, err := io.ReadFull(r, b[:]); err != nil {
				return 0, err
			}
			bits := binary.LittleEndian.Uint32(b[1:])
			w, h = int64(bits&0x3fff)+1, int64(bits>>14&0x3fff)+1
			skip -= 5
		}
		most = max(most, w*h)
		if _, err := r.Seek(skip, io.SeekCurrent); err != nil {
			return 0, err
		}
	}
}

// scaleImage resizes without upscaling. "scale" fits the image inside the
// box keeping its aspect ratio; "crop" fills the box and cuts the overflow
// from the centre.
func scaleImage(img image.Image, size thumbSize) image.Image {
	b := img.Bounds()
	sw, sh := b.Dx(), b.Dy()
	if size.method == "crop" {
		// Scale so the image covers the box, then take its centre.
		ratio := max(float64(size.w)/float64(sw), float64(size.h)/float64(sh))
		ratio = min(ratio, 1)
		cw, ch := min(sw, int(float64(size.w)/ratio+0.5)), min(sh, int(float64(size.h)/ratio+0.5))
		x0, y0 := b.Min.X+(sw-cw)/2, b.Min.Y+(sh-ch)/2
		srcRect := image.Rect(x0, y0, x0+cw, y0+ch)
		dw, dh := min(size.w, cw), min(size.h, ch)
		dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
		draw.CatmullRom.Scale(dst, dst.Bounds(), img, srcRect, draw.Src, nil)
		return dst
	}
	ratio := min(float64(size.w)/float64(sw), float64(size.h)/float64(sh), 1)
	dw, dh := max(1, int(float64(sw)*ratio+0.5)), max(1, int(float64(sh)*ratio+0.5))
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	draw.CatmullRom.Scale(dst, dst.Bounds(), img, b, draw.Src, nil)
	return dst
}

// writeFileAtomic writes a cache file through a temporary name, so a
// reader never sees half a thumbnail.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}

// jpegOrientation reads the EXIF Orientation tag (1-8) of a JPEG; 1 when
// absent. Phone cameras store pixels as the sensor saw them and record the
// rotation here, so a thumbnail that ignored it would lie on its side.
func jpegOrientation(data []byte) int {
	if len(data) < 4 || data[0] != 0xFF || data[1] != 0xD8 {
		return 1
	}
	for i := 2; i+4 <= len(data); {
		if data[i] != 0xFF {
			return 1
		}
		marker := data[i+1]
		if marker == 0xDA || marker == 0xD9 { // start of scan, end of image
			return 1
		}
		n := int(data[i+2])<<8 | int(data[i+3])
		if n < 2 || i+2+n > len(data) {
			return 1
		}
		seg := data[i+4 : i+2+n]
		if marker == 0xE1 && len(seg) > 14 && string(seg[:6]) == "Exif\x00\x00" {
			return exifOrientation(seg[6:])
		}
		i += 2 + n
	}
	return 1
}

// exifOrientation finds tag 0x0112 in IFD0 of a TIFF block.
func exifOrientation(tiff []byte) int {
	var u16 func([]byte) int
	var u32 func([]byte) int
	switch string(tiff[:2]) {
	case "II":
		u16 = func(b []byte) int { return int(b[0]) | int(b[1])<<8 }
		u32 = func(b []byte) int { return u16(b) | u16(b[2:])<<16 }
	case "MM":
		u16 = func(b []byte) int { return int(b[0])<<8 | int(b[1]) }
		u32 = func(b []byte) int { return u16(b)<<16 | u16(b[2:]) }
	default:
		return 1
	}
	ifd := u32(tiff[4:])
	if ifd < 8 || ifd+2 > len(tiff) {
		return 1
	}
	count := u16(tiff[ifd:])
	for e := 0; e < count; e++ {
		off := ifd + 2 + 12*e
		if off+12 > len(tiff) {
			return 1
		}
		if u16(tiff[off:]) == 0x0112 {
			if o := u16(tiff[off+8:]); o >= 1 && o <= 8 {
				return o
			}
			return 1
		}
	}
	return 1
}

// orient applies an EXIF orientation to a (small, already scaled) image.
func orient(img image.Image, o int) image.Image {
	if o <= 1 || o > 8 {
		return img
	}
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	dw, dh := w, h
	if o >= 5 {
		dw, dh = h, w
	}
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			var nx, ny int
			switch o {
			case 2: // mirrored horizontally
				nx, ny = w-1-x, y
			case 3: // rotated 180°
				nx, ny = w-1-x, h-1-y
			case 4: // mirrored vertically
				nx, ny = x, h-1-y
			case 5: // transposed
				nx, ny = y, x
			case 6: // rotate 90° clockwise to display
				nx, ny = h-1-y, x
			case 7: // transversed
				nx, ny = h-1-y, w-1-x
			case 8: // rotate 90° anticlockwise to display
				nx, ny = y, w-1-x
			}
			dst.Set(nx, ny, img.At(b.Min.X+x, b.Min.Y+y))
		}
	}
	return dst
}
