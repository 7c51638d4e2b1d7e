// envelope-verdict reads EventRouter envelopes, one per line (or, with -nul, separated by NUL
// bytes), and prints for each, as one JSON line, what Go's encoding/json makes of it: whether
// json.Valid accepts it, whether Unmarshal accepts it into a struct shaped like EventRouter's
// envelope (the fields fanout extracts, with the same Go types as Kubernetes' core/v1 Event)
// and into an interface{} (what a generic consumer does), whether its bytes are UTF-8 (Go
// replaces invalid UTF-8 and lone surrogates with U+FFFD instead of refusing them), and the
// fields the struct decoded, for comparison with fanout's own reading.
//
// fanout's tests (tests/integration/go_agreement.rs) run it with `go run`; it uses only the
// standard library and builds with Go 1.19 or later.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"unicode/utf8"
)

type objectReference struct {
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace"`
	Name       string `json:"name"`
	UID        string `json:"uid"`
	APIVersion string `json:"apiVersion"`
	FieldPath  string `json:"fieldPath"`
}

type event struct {
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
		UID       string `json:"uid"`
	} `json:"metadata"`
	InvolvedObject objectReference  `json:"involvedObject"`
	Related        *objectReference `json:"related"`
	Reason         string           `json:"reason"`
	Message        string           `json:"message"`
	Type           string           `json:"type"`
	Count          int32            `json:"count"`
	Source         struct {
		Component string `json:"component"`
		Host      string `json:"host"`
	} `json:"source"`
	ReportingComponent string  `json:"reportingComponent"`
	FirstTimestamp     *string `json:"firstTimestamp"`
	LastTimestamp      *string `json:"lastTimestamp"`
	EventTime          *string `json:"eventTime"`
}

type envelope struct {
	Verb     string `json:"verb"`
	Event    *event `json:"event"`
	OldEvent *event `json:"old_event"`
}

type verdict struct {
	Valid bool `json:"valid"`
	// An Unmarshal error, or "" when it succeeded.
	Struct string `json:"struct"`
	Any    string `json:"any"`
	UTF8   bool   `json:"utf8"`
	// What the struct decoded, when it did.
	Verb      string `json:"verb,omitempty"`
	HasEvent  bool   `json:"has_event"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	Object    string `json:"object"`
	ObjectNS  string `json:"object_namespace"`
	Reason    string `json:"reason"`
	Message   string `json:"message"`
	Count     int32  `json:"count"`
}

func judge(input []byte) verdict {
	v := verdict{Valid: json.Valid(input), UTF8: utf8.Valid(input)}
	var e envelope
	if err := json.Unmarshal(input, &e); err != nil {
		v.Struct = err.Error()
	} else {
		v.Verb = e.Verb
		if e.Event != nil {
			v.HasEvent = true
			v.Namespace = e.Event.Metadata.Namespace
			v.Name = e.Event.Metadata.Name
			v.Kind = e.Event.InvolvedObject.Kind
			v.Object = e.Event.InvolvedObject.Name
			v.ObjectNS = e.Event.InvolvedObject.Namespace
			v.Reason = e.Event.Reason
			v.Message = e.Event.Message
			v.Count = e.Event.Count
		}
	}
	var any interface{}
	if err := json.Unmarshal(input, &any); err != nil {
		v.Any = err.Error()
	}
	return v
}

func main() {
	nul := flag.Bool("nul", false, "inputs are separated by NUL bytes, not newlines")
	flag.Parse()
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sep := []byte{'\n'}
	if *nul {
		sep = []byte{0}
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	encoder := json.NewEncoder(out)
	for _, line := range bytes.Split(input, sep) {
		if len(line) == 0 {
			continue
		}
		if err := encoder.Encode(judge(line)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
