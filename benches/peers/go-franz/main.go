// go-franz: the old Go events-fanout's job, on franz-go, as a peer for the pipeline benchmark.
//
// It consumes the EventRouter topic in a consumer group and re-produces each record's value
// bytes unchanged, with its key and its source timestamp, to the topic named after
// `event.metadata.namespace`. The old tool's bugs are fixed so that it can be measured fairly:
//
//   - the key and the source timestamp are kept (the benchmark measures latency from it);
//   - offsets are committed only after delivery: each polled batch is produced asynchronously,
//     all of it in flight at once, and its offsets are marked for the next commit only when
//     every record of the batch has been acknowledged (idempotent producer, acks=all, as
//     fanout's);
//   - a record that cannot be routed (not JSON, no `event`, no namespace, a namespace that is
//     not a legal topic name) goes to the dead-letter topic with a reason header, instead of
//     crashing the process or being dropped.
//
// Client settings follow fanout's where they compare: a 5 ms producer linger, the given
// fetch.wait.max.ms, a 5 s commit interval, reading a new group's partitions from the start.
//
// Usage: go-franz BOOTSTRAP SOURCE_TOPIC GROUP_ID [FETCH_WAIT_MS [DEAD_LETTER_TOPIC]]
// Runs until SIGTERM or SIGINT, then finishes its batch, commits and prints its counts to stderr.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The envelope's one field this program reads; encoding/json skips the rest.
type envelope struct {
	Event *struct {
		Metadata struct {
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	} `json:"event"`
}

// route returns the destination topic of an envelope, or "" and why it cannot be routed.
func route(value []byte) (string, string) {
	var e envelope
	if err := json.Unmarshal(value, &e); err != nil {
		return "", "malformed"
	}
	if e.Event == nil {
		return "", "no-event"
	}
	ns := e.Event.Metadata.Namespace
	if ns == "" {
		return "", "no-namespace"
	}
	if !legalTopic(ns) {
		return "", "illegal-topic"
	}
	return ns, ""
}

// legalTopic is Kafka's rule for topic names.
func legalTopic(name string) bool {
	if len(name) > 249 || name == "." || name == ".." {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: go-franz BOOTSTRAP SOURCE_TOPIC GROUP_ID [FETCH_WAIT_MS [DEAD_LETTER_TOPIC]]")
		os.Exit(2)
	}
	bootstrap, source, group := os.Args[1], os.Args[2], os.Args[3]
	fetchWait := 500 * time.Millisecond
	if len(os.Args) > 4 {
		ms, err := strconv.Atoi(os.Args[4])
		if err != nil {
			fmt.Fprintf(os.Stderr, "FETCH_WAIT_MS %q: %v\n", os.Args[4], err)
			os.Exit(2)
		}
		fetchWait = time.Duration(ms) * time.Millisecond
	}
	deadLetter := "fanout-dead-letter"
	if len(os.Args) > 5 {
		deadLetter = os.Args[5]
	}

	client, err := kgo.NewClient(
		kgo.SeedBrokers(strings.Split(bootstrap, ",")...),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(source),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(fetchWait),
		// Commit what was marked (delivered), every 5 s, on revoke and on leaving.
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(5*time.Second),
		// A rebalance waits until the polled batch is delivered and marked.
		kgo.BlockRebalanceOnPoll(),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	)
	if err != nil {
		fmt.Fprintf(os.Stderr, "creating the client: %v\n", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	var forwarded, deadLettered int
	var failure error
	var mu sync.Mutex
	var wg sync.WaitGroup
	delivered := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			if failure == nil {
				failure = err
			}
			mu.Unlock()
		}
		wg.Done()
	}

	for failure == nil {
		fetches := client.PollFetches(ctx)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			break
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.Canceled) {
				failure = fmt.Errorf("fetching %s/%d: %w", topic, partition, err)
			}
		})
		if failure != nil {
			break
		}
		records := fetches.Records()
		for _, r := range records {
			topic, reason := route(r.Value)
			out := &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value, Timestamp: r.Timestamp}
			if reason != "" {
				out.Topic = deadLetter
				out.Headers = []kgo.RecordHeader{
					{Key: "fanout.reason", Value: []byte(reason)},
					{Key: "fanout.source", Value: []byte(fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset))},
				}
				deadLettered++
			} else {
				forwarded++
			}
			wg.Add(1)
			// Not the signal's context: a batch once started is delivered in full.
			client.Produce(context.Background(), out, delivered)
		}
		wg.Wait()
		if failure != nil {
			break
		}
		client.MarkCommitRecords(records...)
		client.AllowRebalance()
	}

	status := 0
	if failure != nil {
		// Nothing of the failed batch is marked: it is read again after a restart.
		fmt.Fprintf(os.Stderr, "stopping: %v\n", failure)
		status = 1
	} else {
		commitCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := client.CommitMarkedOffsets(commitCtx); err != nil {
			fmt.Fprintf(os.Stderr, "committing: %v\n", err)
			status = 1
		}
		cancel()
	}
	client.AllowRebalance()
	client.Close()
	fmt.Fprintf(os.Stderr, "forwarded %d, dead-lettered %d\n", forwarded, deadLettered)
	os.Exit(status)
}
