package memstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
)

// definitionRow is one stored version of a definition.
type definitionRow struct {
	hash         string
	content      []byte // jsonb text
	createdAt    time.Time
	registeredBy string
}

// RegisterDefinition implements store.Definitions: identical content to the latest version is a
// no-op; anything else, even an older version's content, becomes the next version.
func (s *Store) RegisterDefinition(ctx context.Context, def saga.Definition) (saga.Definition, bool, error) {
	release, err := s.acquire(ctx)
	if err != nil {
		return saga.Definition{}, false, fmt.Errorf("register definition %q: %w", def.Name, err)
	}
	defer release()
	if err := errors.Join(checkText("name", def.Name), checkText("registered_by", def.RegisteredBy)); err != nil {
		return saga.Definition{}, false, fmt.Errorf("register definition %q: %w", def.Name, err)
	}
	content, err := jsonb(def.CanonicalJSON())
	if err != nil {
		return saga.Definition{}, false, fmt.Errorf("register definition %q: content: %w", def.Name, err)
	}
	hash := def.Hash()
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	versions := s.defs[def.Name]
	out := def
	if n := len(versions); n > 0 && versions[n-1].hash == hash {
		out.Version, out.CreatedAt, out.RegisteredBy = n, versions[n-1].createdAt, versions[n-1].registeredBy
		return out, false, nil
	}
	s.defs[def.Name] = append(versions, definitionRow{hash: hash, content: content, createdAt: now, registeredBy: def.RegisteredBy})
	out.Version, out.CreatedAt = len(versions)+1, now
	return out, true, nil
}

// GetDefinition implements store.Definitions.
func (s *Store) GetDefinition(ctx context.Context, name string, version int) (saga.Definition, error) {
	release, err := s.acquire(ctx)
	if err != nil {
		return saga.Definition{}, fmt.Errorf("get definition %q: %w", name, err)
	}
	defer release()
	if err := checkText("name", name); err != nil {
		return saga.Definition{}, fmt.Errorf("get definition %q: %w", name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	versions := s.defs[name]
	switch {
	case version > len(versions):
		return saga.Definition{}, fmt.Errorf("definition %q version %d: %w", name, version, store.ErrNotFound)
	case version > 0:
	case len(versions) == 0:
		return saga.Definition{}, fmt.Errorf("definition %q: %w", name, store.ErrNotFound)
	default: // 0 (or less) means the latest
		version = len(versions)
	}
	def, err := decodeDefinition(name, version, versions[version-1])
	if err != nil {
		return saga.Definition{}, fmt.Errorf("get definition %q: %w", name, err)
	}
	return def, nil
}

// ListDefinitions implements store.Definitions: the latest version of each, by name.
func (s *Store) ListDefinitions(ctx context.Context, f store.DefinitionFilter) ([]saga.Definition, error) {
	release, err := s.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("list definitions: %w", err)
	}
	defer release()
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.defs))
	for name := range s.defs {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []saga.Definition
	for _, name := range names {
		if name <= f.AfterName {
			continue
		}
		if f.Limit > 0 && len(out) == f.Limit {
			break
		}
		versions := s.defs[name]
		def, err := decodeDefinition(name, len(versions), versions[len(versions)-1])
		if err != nil {
			return nil, fmt.Errorf("list definitions: %w", err)
		}
		out = append(out, def)
	}
	return out, nil
}

// hasDefinition reports whether a version of a definition is stored, for the foreign key of
// sagas. Store.mu must be held.
func (s *Store) hasDefinition(name string, version int) bool {
	return version > 0 && version <= len(s.defs[name])
}

func decodeDefinition(name string, version int, r definitionRow) (saga.Definition, error) {
	var def saga.Definition
	if err := json.Unmarshal(r.content, &def); err != nil {
		return def, fmt.Errorf("decode definition %q version %d: %w", name, version, err)
	}
	def.Version, def.CreatedAt, def.RegisteredBy = version, r.createdAt, r.registeredBy
	return def, nil
}
