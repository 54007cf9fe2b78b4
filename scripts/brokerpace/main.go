// Command brokerpace publishes confirmed messages at a fixed rate, in bursts of a fixed size, to
// durable queues that a consumer drains with one ack per message: the broker's work for
// sagacoord's messages without sagacoord. Measure the broker's CPU meanwhile (for example from
// /proc/PID/stat of beam.smp) to learn what a message costs at a given rate and burstiness.
// docs/performance.md uses it to show that the broker's CPU per message at a moderate rate is the
// same for a bare client as for the coordinator and participants.
//
//	go run ./scripts/brokerpace --rate 840 --burst 1 --for 9s
package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/spf13/cobra"

	"github.com/sagacoord/sagacoord/internal/cmdline"
)

// options are the command line.
type options struct {
	url        string
	rate       float64
	burst      int
	queues     int
	persistent bool
	confirms   bool
	size       int
	dur        time.Duration
}

func main() {
	var o options
	cmd := &cobra.Command{
		Use:           "brokerpace [flags]",
		Short:         "Load RabbitMQ alone with confirmed messages at a fixed rate",
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.NoArgs,
		RunE:          func(*cobra.Command, []string) error { return run(o) },
	}
	cmd.CompletionOptions.DisableDefaultCmd = true
	f := cmd.Flags()
	f.StringVar(&o.url, "amqp-url", "amqp://guest:guest@127.0.0.1:5672/", "broker")
	f.Float64Var(&o.rate, "rate", 840, "messages per second")
	f.IntVar(&o.burst, "burst", 1, "messages published together, each burst rate/burst times a second")
	f.IntVar(&o.queues, "queues", 4, "durable queues, used in turn")
	f.BoolVar(&o.persistent, "persistent", true, "persistent messages (delivery mode 2)")
	f.BoolVar(&o.confirms, "confirms", true, "publisher confirms")
	f.IntVar(&o.size, "size", 300, "body bytes")
	f.DurationVar(&o.dur, "for", 10*time.Second, "how long to publish")
	cmd.SetArgs(cmdline.DoubleDash(cmd, os.Args[1:]))
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "brokerpace:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.rate <= 0 || o.burst < 1 || o.queues < 1 {
		return fmt.Errorf("--rate must be positive and --burst and --queues at least 1")
	}
	pubConn, err := amqp.Dial(o.url)
	if err != nil {
		return err
	}
	defer pubConn.Close()
	subConn, err := amqp.Dial(o.url)
	if err != nil {
		return err
	}
	defer subConn.Close()
	pub, err := pubConn.Channel()
	if err != nil {
		return err
	}
	if o.confirms {
		if err := pub.Confirm(false); err != nil {
			return err
		}
	}
	names, err := declareQueues(pub, subConn, o.queues)
	if err != nil {
		return err
	}
	n, nacked, err := publish(pub, names, o)
	if err != nil {
		return err
	}
	fmt.Printf("published %d (%.0f/s), %d refused\n", n, float64(n)/o.dur.Seconds(), nacked)
	for _, q := range names {
		_, _ = pub.QueueDelete(q, false, false, false)
	}
	return nil
}

// declareQueues declares and empties the durable queues, each drained by a consumer of subConn
// that acknowledges every message.
func declareQueues(pub *amqp.Channel, subConn *amqp.Connection, queues int) ([]string, error) {
	names := make([]string, queues)
	for i := range names {
		names[i] = fmt.Sprintf("brokerpace-%d", i)
		if _, err := pub.QueueDeclare(names[i], true, false, false, false, nil); err != nil {
			return nil, err
		}
		if _, err := pub.QueuePurge(names[i], false); err != nil {
			return nil, err
		}
		sub, err := subConn.Channel()
		if err != nil {
			return nil, err
		}
		if err := sub.Qos(32, 0, false); err != nil {
			return nil, err
		}
		deliveries, err := sub.Consume(names[i], "", false, false, false, false, nil)
		if err != nil {
			return nil, err
		}
		go func() {
			for d := range deliveries {
				_ = d.Ack(false)
			}
		}()
	}
	return names, nil
}

// publish publishes bursts at the rate for the duration, to the queues in turn, and returns how
// many it published and how many of them the broker refused.
func publish(pub *amqp.Channel, names []string, o options) (n, nacked int, err error) {
	mode := amqp.Transient
	if o.persistent {
		mode = amqp.Persistent
	}
	body := make([]byte, o.size)
	tick := time.NewTicker(time.Duration(float64(time.Second) * float64(o.burst) / o.rate))
	defer tick.Stop()
	confirms := make(chan burst, 1024)
	done := make(chan int)
	go func() { // wait for the confirms off the publishing loop, counting the refused
		refused := 0
		var waits []time.Duration
		for b := range confirms {
			for _, c := range b.confirms {
				if c != nil && !c.Wait() { // nil without confirms
					refused++
				}
			}
			waits = append(waits, time.Since(b.at))
		}
		printConfirmLatency(waits, o.confirms)
		done <- refused
	}()
	defer func() {
		close(confirms)
		nacked = <-done
	}()
	for end := time.Now().Add(o.dur); time.Now().Before(end); {
		<-tick.C
		cs := make([]*amqp.DeferredConfirmation, 0, o.burst)
		at := time.Now()
		for range o.burst {
			c, err := pub.PublishWithDeferredConfirmWithContext(context.Background(), "", names[n%len(names)], false, false,
				amqp.Publishing{DeliveryMode: mode, Body: body})
			if err != nil {
				confirms <- burst{at: at, confirms: cs}
				return n, 0, err
			}
			cs = append(cs, c)
			n++
		}
		confirms <- burst{at: at, confirms: cs}
	}
	return n, 0, nil
}

// burst is the confirmations of one burst and when its first message was published.
type burst struct {
	at       time.Time
	confirms []*amqp.DeferredConfirmation
}

// printConfirmLatency prints the median and 99th percentile of the time from a burst's publish
// to its last confirm.
func printConfirmLatency(waits []time.Duration, confirms bool) {
	if !confirms || len(waits) == 0 {
		return
	}
	slices.Sort(waits)
	at := func(q float64) time.Duration { return waits[int(q*float64(len(waits)-1))] }
	fmt.Printf("burst publish to last confirm: p50 %v, p99 %v\n", at(0.5).Round(10*time.Microsecond), at(0.99).Round(10*time.Microsecond))
}
