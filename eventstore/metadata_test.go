package eventstore

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestDecodeMetadataAgreesWithEncodingJSON feeds the fast path and
// encoding/json the same documents: what jsonb prints, and the shapes the
// fast path leaves to encoding/json.
func TestDecodeMetadataAgreesWithEncodingJSON(t *testing.T) {
	for _, doc := range []string{
		`{"actor": "anonymous", "occurredAt": "2026-01-01T00:00:01.5Z", "causationId": "c", "correlationId": "k"}`,
		`{"actor":"account:1","occurredAt":"2026-01-01T00:00:01+02:00"}`,
		`{"occurredAt": "0001-01-01T00:00:00Z"}`,
		` { } `,
		`{}`,
		`{"actor": "a\"b", "occurredAt": "2026-01-01T00:00:01Z"}`,
		`{"actor": "é", "occurredAt": "2026-01-01T00:00:01Z"}`,
		`{"Actor": "upper", "occurredAt": "2026-01-01T00:00:01Z"}`,
		`{"actor": null, "occurredAt": "2026-01-01T00:00:01Z"}`,
		`{"actor": "a", "extra": 1, "occurredAt": "2026-01-01T00:00:01Z"}`,
		`{"actor": "a", "actor": "b", "occurredAt": "2026-01-01T00:00:01Z"}`,
		`{"occurredAt": "yesterday"}`,
		`{"occurredAt": ""}`,
		`{"actor": "a",}`,
		`{"actor": "a"} x`,
		`[]`,
		``,
	} {
		var fast, slow Metadata
		fast.Actor = "left over"
		errFast := decodeMetadata([]byte(doc), &fast)
		errSlow := json.Unmarshal([]byte(doc), &slow)
		if (errFast == nil) != (errSlow == nil) {
			t.Errorf("%s: error %v, encoding/json %v", doc, errFast, errSlow)
			continue
		}
		if errSlow == nil && (!reflect.DeepEqual(fast, slow) || fast.OccurredAt.Location().String() != slow.OccurredAt.Location().String()) {
			t.Errorf("%s: %+v, encoding/json %+v", doc, fast, slow)
		}
	}
}
