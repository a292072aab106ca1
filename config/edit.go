package config

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Setting is one value to write into the config file: Path is the key path
// ("caches", "global_factor") and Value anything YAML can encode.
type Setting struct {
	Path  []string
	Value any
}

// UpdateFile writes settings into the YAML file at path, editing the node
// tree so the operator's comments, key order and other keys survive. Missing
// sections are appended. The result is parsed and validated before it
// replaces the file (atomically, keeping its permissions), so a bad value
// never leaves a config that would stop the next start.
func UpdateFile(path string, settings ...Setting) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	out, err := editYAML(raw, settings)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if _, _, err := Parse(out, path); err != nil {
		return fmt.Errorf("config: the change would make the file invalid: %w", err)
	}
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".homeserver-*.yaml")
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(out); err != nil {
		tmp.Close()
		return fmt.Errorf("config: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(info.Mode().Perm()); err != nil {
		tmp.Close()
		return fmt.Errorf("config: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("config: replace %s: %w", path, err)
	}
	return nil
}

// editYAML applies settings to a YAML document and re-encodes it.
func editYAML(raw []byte, settings []Setting) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	if doc.Kind == 0 { // empty file
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("the top level is not a mapping")
	}
	for _, s := range settings {
		if len(s.Path) == 0 {
			return nil, fmt.Errorf("empty key path")
		}
		var val yaml.Node
		if err := val.Encode(s.Value); err != nil {
			return nil, fmt.Errorf("%s: %w", strings.Join(s.Path, "."), err)
		}
		m := root
		for i, key := range s.Path[:len(s.Path)-1] {
			child := lookup(m, key)
			if child == nil {
				child = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
				m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, child)
			}
			if child.Kind == yaml.ScalarNode && (child.Tag == "!!null" || child.Value == "") {
				// "caches:" with nothing under it: becomes a mapping.
				child.Kind, child.Tag, child.Value, child.Style = yaml.MappingNode, "!!map", "", 0
			}
			if child.Kind != yaml.MappingNode {
				return nil, fmt.Errorf("%s is not a mapping", strings.Join(s.Path[:i+1], "."))
			}
			m = child
		}
		last := s.Path[len(s.Path)-1]
		if old := lookup(m, last); old != nil {
			// Replace the value in place: its comments stay.
			old.Kind, old.Tag, old.Value, old.Style, old.Content = val.Kind, val.Tag, val.Value, val.Style, val.Content
		} else {
			m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: last}, &val)
		}
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(indentOf(raw))
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// lookup returns the value node of key in mapping m, or nil.
func lookup(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// indentOf guesses the file's indentation (the smallest indent of a key
// line) so a re-encoded file keeps its look; 2 when nothing is indented.
func indentOf(raw []byte) int {
	best := 0
	for _, line := range strings.Split(string(raw), "\n") {
		trimmed := strings.TrimLeft(line, " ")
		n := len(line) - len(trimmed)
		if n == 0 || trimmed == "" || strings.HasPrefix(trimmed, "#") || strings.HasPrefix(trimmed, "- ") {
			continue
		}
		if best == 0 || n < best {
			best = n
		}
	}
	if best < 2 || best > 8 {
		return 2
	}
	return best
}
