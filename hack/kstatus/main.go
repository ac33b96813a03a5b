// Command kstatus prints kstatus' verdict (sigs.k8s.io/cli-utils/pkg/kstatus/status, the library Flux's
// health checks use) for Kubernetes objects read from stdin: a JSON object, a JSON List (kind: List, as
// `kubectl get -o json` prints), or a YAML stream of documents. One line per object:
//
//	<kind>/<name> <status> <message>
//
// where status is one of InProgress, Failed, Current, Terminating, NotFound, Unknown. Exits 1 when the
// input cannot be read or an object's status cannot be computed.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	objects, err := read(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for _, obj := range objects {
		result, err := status.Compute(obj)
		if err != nil {
			out.Flush()
			fmt.Fprintf(os.Stderr, "kstatus: %s/%s: %v\n", obj.GetKind(), obj.GetName(), err)
			os.Exit(1)
		}
		message := strings.ReplaceAll(result.Message, "\n", " ")
		fmt.Fprintf(out, "%s/%s %s %s\n", obj.GetKind(), obj.GetName(), result.Status, message)
	}
}

// read decodes every document of a JSON or YAML stream; a List's items count one by one. Each document
// goes through apimachinery's unstructured JSON scheme, as a client's would, so whole numbers are int64
// (kstatus reads metadata.generation and status.observedGeneration as int64).
func read(r io.Reader) ([]*unstructured.Unstructured, error) {
	decoder := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	var objects []*unstructured.Unstructured
	for {
		var raw json.RawMessage
		if err := decoder.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return objects, nil
			}
			return nil, err
		}
		if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" { // an empty YAML document
			continue
		}
		decoded, _, err := unstructured.UnstructuredJSONScheme.Decode(raw, nil, nil)
		if err != nil {
			return nil, err
		}
		switch obj := decoded.(type) {
		case *unstructured.Unstructured:
			objects = append(objects, obj)
		case *unstructured.UnstructuredList:
			for i := range obj.Items {
				objects = append(objects, &obj.Items[i])
			}
		default:
			return nil, fmt.Errorf("unexpected %T", decoded)
		}
	}
}
