package auth_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sagacoord/sagacoord/internal/auth"
)

func TestRolesIncludeTheLowerOnes(t *testing.T) {
	t.Parallel()
	op := auth.Identity{Name: "ops", Roles: []auth.Role{auth.RoleOperator}}
	for _, r := range []auth.Role{auth.RoleReader, auth.RoleSubmitter, auth.RoleOperator} {
		require.True(t, op.Allows(r), r)
	}
	reader := auth.Identity{Name: "dash", Roles: []auth.Role{auth.RoleReader}}
	require.True(t, reader.Allows(auth.RoleReader))
	require.False(t, reader.Allows(auth.RoleSubmitter))
	require.False(t, auth.Identity{}.Allows(auth.RoleReader), "no role allows nothing")
	require.False(t, auth.Role("admin").Valid())
}

func TestIdentityTravelsInTheContext(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	require.Equal(t, "anonymous", auth.Caller(ctx))
	ctx = auth.WithIdentity(ctx, auth.Identity{Name: "ci-bot", Roles: []auth.Role{auth.RoleSubmitter}})
	id, ok := auth.FromContext(ctx)
	require.True(t, ok)
	require.Equal(t, "ci-bot", id.Name)
	require.Equal(t, "ci-bot", auth.Caller(ctx))
}
