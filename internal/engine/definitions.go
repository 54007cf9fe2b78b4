package engine

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sagacoord/sagacoord/internal/auth"
	"github.com/sagacoord/sagacoord/internal/store"
	"github.com/sagacoord/sagacoord/saga"
)

// definitions caches the machine of every definition version this instance has used (versions
// are immutable once registered) and, for latestTTL, which version is the latest of each name.
//
// Definitions are loaded outside every state transaction: a mutate function only reads the cache,
// and when it misses it fails with needDefinition, so that the batch is rolled back, the version
// is loaded on a connection of its own, and the batch runs again. A mutate function that loaded
// the definition itself would ask the pool for a second connection while holding one and row
// locks; with as many reply workers as connections, the pool would run dry.
type definitions struct {
	store    store.Definitions
	machines sync.Map // defKey -> *saga.Machine
	latest   sync.Map // name -> latestVersion
}

type defKey struct {
	name    string
	version int
}

// latestTTL bounds how long StartSaga without a version may keep using a version after a newer
// one was registered on another instance.
const latestTTL = time.Second

type latestVersion struct {
	version int
	at      time.Time
}

// needDefinition is the error of a mutate function that met a saga whose definition version is
// not cached; see definitions.
type needDefinition defKey

func (n needDefinition) Error() string {
	return fmt.Sprintf("definition %q version %d is not cached", n.name, n.version)
}

// cached returns the machine of a version if this instance has loaded it.
func (d *definitions) cached(name string, version int) (*saga.Machine, bool) {
	m, ok := d.machines.Load(defKey{name, version})
	if !ok {
		return nil, false
	}
	return m.(*saga.Machine), true
}

// of returns the machine of sg's definition version from the cache, or needDefinition.
func (d *definitions) of(sg *store.Saga) (*saga.Machine, error) {
	if m, ok := d.cached(sg.DefinitionName, sg.DefinitionVersion); ok {
		return m, nil
	}
	return nil, needDefinition{sg.DefinitionName, sg.DefinitionVersion}
}

// machine returns the machine of a version, loading it once. Version 0 means the latest, which
// another instance may change at any time: it is remembered for latestTTL only.
func (d *definitions) machine(ctx context.Context, name string, version int) (*saga.Machine, error) {
	if version == 0 {
		if l, ok := d.latest.Load(name); ok && time.Since(l.(latestVersion).at) < latestTTL {
			version = l.(latestVersion).version
		}
	}
	if version > 0 {
		if m, ok := d.cached(name, version); ok {
			return m, nil
		}
	}
	def, err := d.store.GetDefinition(ctx, name, version)
	if err != nil {
		return nil, err
	}
	if version == 0 {
		d.latest.Store(name, latestVersion{version: def.Version, at: time.Now()})
	}
	m, _ := d.machines.LoadOrStore(defKey{name, def.Version}, saga.NewMachine(&def))
	return m.(*saga.Machine), nil
}

// registered forgets which version of name is the latest: a new one was just registered.
func (d *definitions) registered(name string) { d.latest.Delete(name) }

// load loads what a needDefinition names.
func (d *definitions) load(ctx context.Context, n needDefinition) error {
	_, err := d.machine(ctx, n.name, n.version)
	return err
}

// RegisterDefinition validates and stores a definition and declares its participants' queues,
// so that commands wait in a durable queue even before a worker starts. A new version records
// the caller of ctx as its registrant. It returns the stored version and whether it is new.
func (e *Engine) RegisterDefinition(ctx context.Context, def saga.Definition) (saga.Definition, bool, error) {
	n, err := saga.Normalize(def)
	if err != nil {
		return saga.Definition{}, false, fmt.Errorf("%w: definition: %w", ErrInvalidArgument, err)
	}
	if err := e.declareParticipants(ctx, n); err != nil {
		return saga.Definition{}, false, err
	}
	n.RegisteredBy = auth.Caller(ctx)
	stored, created, err := e.cfg.Store.RegisterDefinition(ctx, n)
	if err != nil {
		return saga.Definition{}, false, err
	}
	e.defs.registered(n.Name)
	e.log.Info("definition registered", "definition", stored.Name, "version", stored.Version, "created", created,
		logCaller, n.RegisteredBy)
	return stored, created, nil
}

// Definition returns a definition version (the latest when version is 0).
func (e *Engine) Definition(ctx context.Context, name string, version int) (*saga.Definition, error) {
	m, err := e.defs.machine(ctx, name, version)
	if err != nil {
		return nil, err
	}
	return m.Definition(), nil
}

func (e *Engine) declareParticipants(ctx context.Context, d saga.Definition) error {
	seen := map[string]bool{}
	for _, s := range d.Steps {
		if seen[s.Participant] {
			continue
		}
		seen[s.Participant] = true
		if err := e.cfg.Transport.DeclareParticipant(ctx, s.Participant); err != nil {
			return fmt.Errorf("declare queue of participant %q: %w", s.Participant, err)
		}
		e.knownParticipants.Store(s.Participant, true)
	}
	return nil
}

// participantKnown reports whether the participant's queue exists. Known participants are
// remembered: queues are durable.
func (e *Engine) participantKnown(ctx context.Context, name string) (bool, error) {
	if _, ok := e.knownParticipants.Load(name); ok {
		return true, nil
	}
	ok, err := e.cfg.Transport.ParticipantExists(ctx, name)
	if err != nil {
		return false, fmt.Errorf("look up participant %q: %w", name, err)
	}
	if ok {
		e.knownParticipants.Store(name, true)
	}
	return ok, nil
}
