package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
)

func newDefinitionCommand(app *App) *cobra.Command {
	return groupCommand("definition", "Register and read saga definitions",
		newDefinitionApplyCommand(app),
		newDefinitionListCommand(app),
		newDefinitionGetCommand(app),
	)
}

func newDefinitionApplyCommand(app *App) *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Register a saga definition from a YAML or JSON file",
		Long: `Register a saga definition. Identical content is a no-op that keeps the current
version; changed content creates the next version. Prints
"definition NAME version N (created)" or "(unchanged)"; -o json prints the server's
answer, {"definition": {...}, "created": true|false}. Use -f - to read standard input.

` + definitionFileHelp,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return flagError("-f FILE is required")
			}
			data, err := app.readInput(file)
			if err != nil {
				return err
			}
			def, err := ParseDefinition(file, data)
			if err != nil {
				return &ExitError{Code: ExitUsage, Err: err}
			}
			client, err := app.sagaClient()
			if err != nil {
				return err
			}
			ctx, cancel := app.CallContext(cmd.Context())
			defer cancel()
			resp, err := client.RegisterDefinition(ctx, &sagacoordv1.RegisterDefinitionRequest{Definition: def})
			if err != nil {
				return app.RPCError(ctx, err)
			}
			if app.JSON() {
				return writeJSON(app.Stdout(), resp)
			}
			state := "unchanged"
			if resp.GetCreated() {
				state = "created"
			}
			_, err = fmt.Fprintf(app.Stdout(), "definition %s version %d (%s)\n", resp.GetDefinition().GetName(), resp.GetDefinition().GetVersion(), state)
			return err
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "definition file (YAML or JSON; - for standard input)")
	return c
}

func newDefinitionListCommand(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the latest version of every definition",
		Long: `List the latest version of every definition, by name: name, version, number of steps,
deadline, creation time and who registered it. sagactl follows the server's pages until every
definition is listed. -o json prints a JSON array of definitions.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := app.sagaClient()
			if err != nil {
				return err
			}
			var defs []*sagacoordv1.SagaDefinition
			req := &sagacoordv1.ListDefinitionsRequest{}
			_, err = followPages(cmd.Context(), app, "", "", maxPageSize, true, func(ctx context.Context, size int32, token string) (string, int, error) {
				req.PageSize, req.PageToken = size, token
				resp, err := client.ListDefinitions(ctx, req)
				if err != nil {
					return "", 0, err
				}
				defs = append(defs, resp.GetDefinitions()...)
				return resp.GetNextPageToken(), len(defs), nil
			})
			if err != nil {
				return err
			}
			if app.JSON() {
				return writeJSONArray(app.Stdout(), defs)
			}
			t := newTable(app.Stdout(), "NAME", "VERSION", "STEPS", "DEADLINE", "CREATED", "REGISTERED BY")
			for _, d := range defs {
				t.row(d.GetName(), fmt.Sprint(d.GetVersion()), fmt.Sprint(len(d.GetSteps())),
					string(formatDurationPB(d.GetDeadline())), formatTS(d.GetCreatedAt()), d.GetRegisteredBy())
			}
			return t.flush()
		},
	}
}

func newDefinitionGetCommand(app *App) *cobra.Command {
	var version int32
	c := &cobra.Command{
		Use:   "get NAME [--version N]",
		Short: "Print a definition as YAML (or JSON with -o json)",
		Long: `Print one version of a definition, the latest by default. The default output is YAML in
the file format of 'definition apply', so it can be edited and applied again; -o json prints
the definition message as JSON, which 'definition apply' also accepts.`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if version < 0 {
				return flagError("invalid --version %d: must be positive (or 0 for the latest)", version)
			}
			client, err := app.sagaClient()
			if err != nil {
				return err
			}
			ctx, cancel := app.CallContext(cmd.Context())
			defer cancel()
			resp, err := client.GetDefinition(ctx, &sagacoordv1.GetDefinitionRequest{Name: args[0], Version: version})
			if err != nil {
				return app.RPCError(ctx, err)
			}
			if app.JSON() {
				return writeJSON(app.Stdout(), resp.GetDefinition())
			}
			out, err := definitionYAML(resp.GetDefinition())
			if err != nil {
				return fmt.Errorf("render definition as YAML: %w", err)
			}
			_, err = app.Stdout().Write(out)
			return err
		},
	}
	c.Flags().Int32Var(&version, "version", 0, "definition version (default: the latest)")
	return c
}
