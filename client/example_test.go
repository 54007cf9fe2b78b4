package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/sagacoord/sagacoord/client"
	sagacoordv1 "github.com/sagacoord/sagacoord/gen/sagacoord/v1"
)

// Start a saga of a registered definition and read its status back.
func Example() {
	c, err := client.New("127.0.0.1:7233")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	started, err := c.Saga.StartSaga(ctx, &sagacoordv1.StartSagaRequest{
		Definition: "transfer",
		Input:      []byte(`{"from":"acct-1","to":"acct-2","amount":10}`),
	})
	if err != nil {
		log.Fatal(err)
	}
	got, err := c.Saga.GetSaga(ctx, &sagacoordv1.GetSagaRequest{SagaId: started.GetSaga().GetId()})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(got.GetSaga().GetStatus())
}
