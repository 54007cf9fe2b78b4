package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sagacoord/sagacoord/internal/cli"
)

// The broker users of `sagalab sandbox`.
const (
	coordinatorUser = "sagacoord-coordinator"
	simUser         = "participant-sim"
)

// Command is `sagalab sandbox` (cmd/sagalab).
func Command(app *cli.App) *cobra.Command {
	var dir, participants, vhost string
	cmd := &cobra.Command{
		Use:   "sandbox --dir DIR --participants a,b,...",
		Short: "Run a PostgreSQL and a RabbitMQ that take only TLS, with least-privilege users, until interrupted",
		Long: `sandbox starts a PostgreSQL and a RabbitMQ node of their own (internal/sandbox) on free ports,
which accept only TLS with a client certificate from a CA it makes. The broker has the layout of
docs/security.md on --vhost: a user for the coordinator and one for participant-sim, which may
read the queues of --participants and publish replies. It writes into --dir:

  coordinator.database-url, coordinator.amqp-url          for coordinator serve --*-url-file
  participant-sim.database-url, participant-sim.amqp-url  for participant-sim --*-url-file
  admin.database-url                                      for psql (its password in admin.pgpass)
  api.pem, api.key, credentials.yaml                      for coordinator serve --tls-cert, --tls-key,
                                                          --tls-client-ca ca.pem, --credentials-file
  sagactl.pem, sagactl.key                                sagactl's client certificate (role operator)
  sandbox.env                                             ports and node name, written last

and runs until SIGINT or SIGTERM, then stops both servers. scripts/demo-tls.sh (make demo-tls)
runs the demo on it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || participants == "" {
				return cli.UsageErrorf("--dir and --participants are required")
			}
			return runSandbox(cmd.Context(), app.Stdout(), dir, vhost, strings.Split(participants, ","))
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory for the servers and the files it writes (created; reachable by the postgres and rabbitmq users)")
	cmd.Flags().StringVar(&participants, "participants", "", "comma-separated participants whose queues participant-sim's user may read")
	cmd.Flags().StringVar(&vhost, "vhost", "sagacoord", "the RabbitMQ vhost of the layout")
	return cmd
}

// sandboxRun is a running sandbox and what its files hold.
type sandboxRun struct {
	dir        string
	ca         *CA
	pg         *Postgres
	mq         *Rabbit
	pgPassword string
	passwords  map[string]string // broker user -> password
}

func runSandbox(ctx context.Context, out io.Writer, dir, vhost string, participants []string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	s := &sandboxRun{dir: dir, pgPassword: randomHex(16), passwords: map[string]string{coordinatorUser: randomHex(16), simUser: randomHex(16)}}
	defer s.stop()
	var err error
	if s.ca, err = NewCA(dir); err != nil {
		return err
	}
	if s.pg, err = StartPostgres(ctx, PostgresConfig{Dir: filepath.Join(dir, "postgres"), CA: s.ca, Password: s.pgPassword, ClientCert: true}); err != nil {
		return err
	}
	defs := Definitions{VHosts: []string{vhost},
		Users:       []User{{Name: coordinatorUser, Password: s.passwords[coordinatorUser]}, {Name: simUser, Password: s.passwords[simUser]}},
		Permissions: []Permission{CoordinatorPermission(coordinatorUser, vhost), ParticipantPermission(simUser, vhost, participants...)}}
	if s.mq, err = StartRabbit(ctx, RabbitConfig{Dir: filepath.Join(dir, "rabbitmq"), CA: s.ca, ClientCert: true, Definitions: defs}); err != nil {
		return err
	}
	if err := s.writeFiles(vhost); err != nil {
		return err
	}
	fmt.Fprintf(out, "sandbox ready in %s: PostgreSQL on 127.0.0.1:%d, RabbitMQ (amqps) on 127.0.0.1:%d, vhost %s\n", dir, s.pg.Port, s.mq.Port, vhost)
	<-ctx.Done()
	fmt.Fprintln(out, "stopping the sandbox")
	return nil
}

func (s *sandboxRun) stop() {
	if s.mq != nil {
		s.mq.Stop()
	}
	if s.pg != nil {
		s.pg.Stop()
	}
}

// writeFiles writes the URL files, each with a client certificate of its own, and sandbox.env
// last, by a rename, so that a script may wait for it.
func (s *sandboxRun) writeFiles(vhost string) error {
	files := map[string]func() (string, error){
		"coordinator.database-url":     func() (string, error) { return s.dbURL("coordinator-db") },
		"participant-sim.database-url": func() (string, error) { return s.dbURL("participant-sim-db") },
		"coordinator.amqp-url":         func() (string, error) { return s.amqpURL(coordinatorUser, vhost) },
		"participant-sim.amqp-url":     func() (string, error) { return s.amqpURL(simUser, vhost) },
		"admin.database-url":           s.adminDBURL,
	}
	for name, content := range files {
		v, err := content()
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(s.dir, name), []byte(v+"\n"), 0o600); err != nil {
			return err
		}
	}
	if err := s.writeAPIFiles(); err != nil {
		return err
	}
	env := fmt.Sprintf("SANDBOX_DIR=%s\nSANDBOX_POSTGRES_PORT=%d\nSANDBOX_RABBITMQ_PORT=%d\nSANDBOX_RABBITMQ_NODE=%s\n", s.dir, s.pg.Port, s.mq.Port, s.mq.Node)
	tmp := filepath.Join(s.dir, "sandbox.env.tmp")
	if err := os.WriteFile(tmp, []byte(env), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(s.dir, "sandbox.env"))
}

// apiCaller is the identity of sagactl's client certificate, an operator in credentials.yaml.
const apiCaller = "demo-operator"

// writeAPIFiles writes what the coordinator's API needs to take only TLS with client certificates
// from the sandbox's CA: its certificate and the credentials file, and sagactl's certificate.
func (s *sandboxRun) writeAPIFiles() error {
	if _, err := s.ca.Server(s.dir, "api"); err != nil {
		return err
	}
	if _, err := s.ca.Client(s.dir, "sagactl", apiCaller); err != nil {
		return err
	}
	creds := "certificates:\n  - common_name: " + apiCaller + "\n    roles: [operator]\n"
	return os.WriteFile(filepath.Join(s.dir, "credentials.yaml"), []byte(creds), 0o600)
}

func (s *sandboxRun) dbURL(certName string) (string, error) {
	pair, err := s.ca.Client(s.dir, certName, "postgres")
	if err != nil {
		return "", err
	}
	return s.pg.URL(s.pgPassword, "postgres", pair), nil
}

func (s *sandboxRun) amqpURL(user, vhost string) (string, error) {
	pair, err := s.ca.Client(s.dir, user+"-mq", user)
	if err != nil {
		return "", err
	}
	return s.mq.URL(user, s.passwords[user], vhost, pair), nil
}

// adminDBURL is the database URL for psql: the password is in a pgpass file it names, so that it
// is on no command line.
func (s *sandboxRun) adminDBURL() (string, error) {
	raw, err := s.dbURL("admin-db")
	if err != nil {
		return "", err
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", errors.New("sandbox: admin database URL does not parse")
	}
	passfile := filepath.Join(s.dir, "admin.pgpass")
	line := "127.0.0.1:" + strconv.Itoa(s.pg.Port) + ":*:postgres:" + s.pgPassword + "\n"
	if err := os.WriteFile(passfile, []byte(line), 0o600); err != nil {
		return "", err
	}
	u.User = url.User("postgres")
	q := u.Query()
	q.Set("passfile", passfile)
	u.RawQuery = q.Encode()
	return u.String(), nil
}
