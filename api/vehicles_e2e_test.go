package api_test

import (
	"net/http"
	"strings"
	"testing"
)

// Two accounts claiming one car at the same instant: exactly one wins.
func TestConcurrentAssociationOneWins(t *testing.T) {
	l := newLedger(t, nil)
	const n = 8
	devices := make([]*device, n)
	for i := range devices {
		email := "owner" + string(rune('a'+i)) + "@example.com"
		l.signIn(email, "d")
		devices[i] = l.device(email, "d")
	}
	counts := l.parallel(n, func(i int) *http.Request {
		req, _ := http.NewRequest("POST", l.url+"/v1/vehicles", strings.NewReader(js(map[string]string{"vin": vin})))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+devices[i].token)
		req.Header.Set("X-Device-Id", devices[i].id)
		return req
	})
	if counts[201] != 1 || counts[409] != n-1 {
		t.Fatalf("statuses %v: want one 201 and %d × 409", counts, n-1)
	}
}

func TestAdminResetsStepsCache(t *testing.T) {
	l := newLedger(t, nil)
	l.signIn("reset@example.com", "p1")
	d := l.device("reset@example.com", "p1")
	d.rest("POST", "/v1/vehicles", js(map[string]string{"vin": vin}), 201, "")
	car := d.rest("POST", "/v1/vehicles/"+vin+"/services", `{"service":"vehicleStatus"}`, 201, "").body["carAssociationID"].(string)
	stepsID := d.get(stepsAPI, map[string]any{"carAssociationID": car})["stepsID"]
	d.shortcut("0600000001", "1357")
	wantStep(t, d.get(stepsAPI, map[string]any{"stepsID": stepsID}), "deviceActivation", "alreadyDone", 2)
	d.set(enrollAPI, map[string]any{"action": "remove"})
	wantStep(t, d.get(stepsAPI, map[string]any{"stepsID": stepsID}), "deviceActivation", "alreadyDone", 2) // cached

	admin := []string{"Authorization", "Bearer " + adminToken}
	l.do("POST", "/v1/admin/steps/"+jsNumber(stepsID)+"/reset", "").want(t, 401, "admin_token_invalid")
	l.do("POST", "/v1/admin/steps/42/reset", "", admin...).want(t, 404, "unknown_steps")
	l.do("POST", "/v1/admin/steps/"+jsNumber(stepsID)+"/reset", "", admin...).want(t, 200, "")
	wantStep(t, d.get(stepsAPI, map[string]any{"stepsID": stepsID}), "deviceActivation", "todo", 2)

	// Reset all: every entry recomputed.
	d.get(smsAPI, map[string]any{"type": "enrollment"})
	d.set(smsAPI, map[string]any{"action": "enrollment", "smsCode": l.lastCode("0600000001")})
	d.set(enrollAPI, map[string]any{"action": "enroll", "pinCode": "1357"})
	d.set(enrollAPI, map[string]any{"action": "remove"})
	if a := l.do("POST", "/v1/admin/steps/reset", "", admin...).want(t, 200, ""); a.body["reset"] != 1.0 {
		t.Fatalf("reset all: %s", a.raw)
	}
	wantStep(t, d.get(stepsAPI, map[string]any{"stepsID": stepsID}), "deviceActivation", "todo", 2)
}
