package server

import (
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	pb "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
	"github.com/sagacoord/sagacoord/internal/auth"
)

// roleOpen marks a method any caller may use, without credentials.
const roleOpen auth.Role = ""

// methodRoles is the role each method the coordinator serves needs (docs/api.md#roles). A
// method missing here is refused to everyone when authentication is on; a test fails when a
// served method has no entry.
var methodRoles = map[string]auth.Role{
	pb.SagaService_GetDefinition_FullMethodName:      auth.RoleReader,
	pb.SagaService_ListDefinitions_FullMethodName:    auth.RoleReader,
	pb.SagaService_GetSaga_FullMethodName:            auth.RoleReader,
	pb.SagaService_ListSagas_FullMethodName:          auth.RoleReader,
	pb.SagaService_WatchSaga_FullMethodName:          auth.RoleReader,
	pb.SagaService_RegisterDefinition_FullMethodName: auth.RoleSubmitter,
	pb.SagaService_StartSaga_FullMethodName:          auth.RoleSubmitter,
	pb.SagaService_AbortSaga_FullMethodName:          auth.RoleOperator,
	pb.SagaService_RetrySaga_FullMethodName:          auth.RoleOperator,

	pb.TwoPCService_GetTransaction_FullMethodName:   auth.RoleReader,
	pb.TwoPCService_ListTransactions_FullMethodName: auth.RoleReader,
	pb.TwoPCService_WatchTransaction_FullMethodName: auth.RoleReader,
	pb.TwoPCService_BeginTransaction_FullMethodName: auth.RoleSubmitter,

	// Load balancers and orchestrators probe health without credentials.
	healthpb.Health_Check_FullMethodName: roleOpen,
	healthpb.Health_List_FullMethodName:  roleOpen,
	healthpb.Health_Watch_FullMethodName: roleOpen,

	// Reflection (--reflection) describes the API, which is no secret, to readers.
	reflectionv1.ServerReflection_ServerReflectionInfo_FullMethodName:      auth.RoleReader,
	reflectionv1alpha.ServerReflection_ServerReflectionInfo_FullMethodName: auth.RoleReader,
}
