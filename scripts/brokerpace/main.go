// Command brokerpace publishes confirmed messages at a fixed rate, in bursts of a fixed size, to
// durable queues that a consumer drains with one ack per message: the broker's work for
// sagacoord's messages without sagacoord. Measure the broker's CPU meanwhile (for example from
// /proc/PID/stat of beam.smp) to learn what a message costs at a given rate and burstiness.
// docs/performance.md uses it to show that the broker's CPU per message at a moderate rate is the
// same for a bare client as for the coordinator and participants.
//
//	go run ./scripts/brokerpace -rate 840 -burst 1 -for 9s
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func main() {
	url := flag.String("amqp-url", "amqp://guest:guest@127.0.0.1:5672/", "broker")
	rate := flag.Float64("rate", 840, "messages per second")
	burst := flag.Int("burst", 1, "messages published together, each burst rate/burst times a second")
	queues := flag.Int("queues", 4, "durable queues, used in turn")
	persistent := flag.Bool("persistent", true, "persistent messages (delivery mode 2)")
	size := flag.Int("size", 300, "body bytes")
	dur := flag.Duration("for", 10*time.Second, "how long to publish")
	flag.Parse()
	if err := run(*url, *rate, *burst, *queues, *persistent, *size, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "brokerpace:", err)
		os.Exit(1)
	}
}

func run(url string, rate float64, burst, queues int, persistent bool, size int, dur time.Duration) error {
	if rate <= 0 || burst < 1 || queues < 1 {
		return fmt.Errorf("-rate must be positive and -burst and -queues at least 1")
	}
	pubConn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer pubConn.Close()
	subConn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer subConn.Close()
	pub, err := pubConn.Channel()
	if err != nil {
		return err
	}
	if err := pub.Confirm(false); err != nil {
		return err
	}
	names := make([]string, queues)
	for i := range names {
		names[i] = fmt.Sprintf("brokerpace-%d", i)
		if _, err := pub.QueueDeclare(names[i], true, false, false, false, nil); err != nil {
			return err
		}
		if _, err := pub.QueuePurge(names[i], false); err != nil {
			return err
		}
		sub, err := subConn.Channel()
		if err != nil {
			return err
		}
		if err := sub.Qos(32, 0, false); err != nil {
			return err
		}
		deliveries, err := sub.Consume(names[i], "", false, false, false, false, nil)
		if err != nil {
			return err
		}
		go func() {
			for d := range deliveries {
				_ = d.Ack(false)
			}
		}()
	}
	mode := amqp.Transient
	if persistent {
		mode = amqp.Persistent
	}
	body := make([]byte, size)
	tick := time.NewTicker(time.Duration(float64(time.Second) * float64(burst) / rate))
	defer tick.Stop()
	confirms := make(chan []*amqp.DeferredConfirmation, 1024)
	done := make(chan int)
	go func() { // wait for the confirms off the publishing loop, counting the refused
		nacked := 0
		for cs := range confirms {
			for _, c := range cs {
				if !c.Wait() {
					nacked++
				}
			}
		}
		done <- nacked
	}()
	n := 0
	for end := time.Now().Add(dur); time.Now().Before(end); {
		<-tick.C
		cs := make([]*amqp.DeferredConfirmation, 0, burst)
		for range burst {
			c, err := pub.PublishWithDeferredConfirmWithContext(context.Background(), "", names[n%queues], false, false,
				amqp.Publishing{DeliveryMode: mode, Body: body})
			if err != nil {
				return err
			}
			cs = append(cs, c)
			n++
		}
		confirms <- cs
	}
	close(confirms)
	nacked := <-done
	fmt.Printf("published %d (%.0f/s), %d refused\n", n, float64(n)/dur.Seconds(), nacked)
	for _, q := range names {
		_, _ = pub.QueueDelete(q, false, false, false)
	}
	return nil
}
