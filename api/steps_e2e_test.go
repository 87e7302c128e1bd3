package api_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/consentledger/ledger/projections"
)

const (
	stepsAPI = "pims.subscription.steps"
	stepAPI  = "pims.subscription.step"
	vin      = "VR1AB12C3D4567890" // the seed's European VIN: no check digit
)

func (d *device) rest(method, path, body string, status int, code string) answer {
	d.l.t.Helper()
	return d.l.do(method, path, body, "Authorization", "Bearer "+d.token, "X-Device-Id", d.id).want(d.l.t, status, code)
}

// stepStatus reads one step of a steps result.
func stepStatus(t *testing.T, result map[string]any, name string) string {
	t.Helper()
	s, ok := result[name].(map[string]any)
	if !ok {
		return ""
	}
	return s["status"].(string)
}

func wantStep(t *testing.T, result map[string]any, name, status string, order float64) {
	t.Helper()
	s, ok := result[name].(map[string]any)
	if !ok || s["name"] != name || s["status"] != status || s["order"] != order {
		t.Fatalf("step %s: %v, want status %s order %v (result %v)", name, result[name], status, order, result)
	}
}

// shortcut enrolls a device with the shortcut method.
func (d *device) shortcut(phone, pin string) {
	d.get(smsAPI, map[string]any{"type": "phoneNumberCertification", "phoneNumber": phone})
	d.set(enrollAPI, map[string]any{"action": "enrollWithPhoneNumber", "pinCode": pin, "smsCode": d.l.lastCode(phone), "phoneNumber": phone})
}

// TestSeed002Steps follows the service-activation tutorial.
func TestSeed002Steps(t *testing.T) { seed002Steps(t, nil) }

func seed002Steps(t *testing.T, open storeFactory) {
	l := newLedger(t, open)
	l.signIn("car@example.com", "phone-1")
	d := l.device("car@example.com", "phone-1")

	// Vehicles and services.
	d.rest("POST", "/v1/vehicles", `{"vin":"VR1AB12C3D456789O"}`, 400, "invalid_vin") // O is not in the VIN alphabet
	d.rest("POST", "/v1/vehicles", js(map[string]string{"vin": vin}), 201, "")
	d.rest("POST", "/v1/vehicles", js(map[string]string{"vin": vin}), 200, "") // again: nothing changes
	car := d.rest("POST", "/v1/vehicles/"+vin+"/services", `{"service":"vehicleStatus"}`, 201, "").body["carAssociationID"].(string)
	again := d.rest("POST", "/v1/vehicles/"+vin+"/services", `{"service":"vehicleStatus"}`, 200, "").body["carAssociationID"]
	if again != car {
		t.Fatalf("subscribing again gave %v, first %s", again, car)
	}
	remote := d.rest("POST", "/v1/vehicles/"+vin+"/services", `{"service":"remoteCommands"}`, 201, "").body["carAssociationID"].(string)
	list := d.rest("GET", "/v1/vehicles", "", 200, "").body["vehicles"].([]any)
	if len(list) != 1 || len(list[0].(map[string]any)["services"].([]any)) != 2 {
		t.Fatalf("vehicles: %v", list)
	}
	// Another account cannot take the car while it is associated.
	l.signIn("thief@example.com", "t1")
	thief := l.device("thief@example.com", "t1")
	thief.rest("POST", "/v1/vehicles", js(map[string]string{"vin": vin}), 409, "vehicle_associated_elsewhere")

	// First list request, by carAssociationID.
	first := d.get(stepsAPI, map[string]any{"carAssociationID": car, "resetSteps": false, "stepsStatus": "all"})
	stepsID := first["stepsID"]
	if _, isNumber := stepsID.(float64); !isNumber {
		t.Fatalf("stepsID %v is not a number", stepsID)
	}
	wantStep(t, first, "trusterPhoneNumber", "todo", 1)
	wantStep(t, first, "deviceActivation", "todo", 2)
	if _, ok := first["mediumCarKey"]; ok {
		t.Fatal("vehicleStatus does not need the car key")
	}
	// The same device asking again by carAssociationID keeps its stepsID.
	if again := d.get(stepsAPI, map[string]any{"carAssociationID": car}); again["stepsID"] != stepsID {
		t.Fatalf("stepsID changed: %v then %v", stepsID, again["stepsID"])
	}
	next := d.get(stepAPI, map[string]any{"stepsID": stepsID})
	wantStep(t, next, "trusterPhoneNumber", "todo", 1)

	// Enroll the device; update the list by stepsID (sent as a string, as in the seed).
	d.shortcut("0612345678", "424242")
	update := d.get(stepsAPI, map[string]any{"stepsID": jsNumber(stepsID), "resetSteps": false, "stepsStatus": "all"})
	wantStep(t, update, "trusterPhoneNumber", "alreadyDone", 1)
	wantStep(t, update, "deviceActivation", "alreadyDone", 2)
	if todo := d.get(stepsAPI, map[string]any{"stepsID": stepsID, "stepsStatus": "todo"}); len(todo) != 1 {
		t.Fatalf("todo filter: %v, want only the stepsID", todo)
	}
	if done := d.get(stepsAPI, map[string]any{"stepsID": stepsID, "stepsStatus": "alreadyDone"}); len(done) != 3 {
		t.Fatalf("alreadyDone filter: %v", done)
	}
	if a := d.call("/pims/get", stepAPI, map[string]any{"stepsID": stepsID}); a.body["status"] != "SUCCEEDED" || a.body["result"] != nil {
		t.Fatalf("next step when none is left: %s", a.raw)
	}

	// Another device of the same account must start from the carAssociationID.
	other := l.device("car@example.com", "phone-2")
	other.failed("/pims/get", stepsAPI, map[string]any{"stepsID": stepsID}, 2331)
	otherSteps := other.get(stepsAPI, map[string]any{"carAssociationID": car})
	if otherSteps["stepsID"] == stepsID {
		t.Fatal("another device got the same stepsID")
	}
	wantStep(t, otherSteps, "deviceActivation", "todo", 2)
	// Another account does not see this stepsID at all.
	thief.failed("/pims/get", stepsAPI, map[string]any{"stepsID": stepsID}, 2332)
	thief.failed("/pims/get", stepsAPI, map[string]any{"carAssociationID": car}, 2332)

	// The cache: after "remove all enrollments" the step stays alreadyDone…
	d.set(enrollAPI, map[string]any{"action": "remove"})
	if d.isDeviceActivated() {
		t.Fatal("device still activated after remove")
	}
	cached := d.get(stepsAPI, map[string]any{"stepsID": stepsID})
	wantStep(t, cached, "deviceActivation", "alreadyDone", 2)
	// …until resetSteps: true recomputes it from the ledger.
	fresh := d.get(stepsAPI, map[string]any{"stepsID": stepsID, "resetSteps": true})
	wantStep(t, fresh, "deviceActivation", "todo", 2)
	wantStep(t, fresh, "trusterPhoneNumber", "alreadyDone", 1) // the phone stays
	wantStep(t, d.get(stepAPI, map[string]any{"stepsID": stepsID}), "deviceActivation", "todo", 2)

	// remoteCommands also needs the car key.
	rc := d.get(stepsAPI, map[string]any{"carAssociationID": remote, "stepsStatus": "all"})
	wantStep(t, rc, "mediumCarKey", "todo", 3)
	rcID := rc["stepsID"]

	// Car key check: a code shown in the car, typed back on the device.
	d.rest("POST", "/v1/vehicles/"+vin+"/carkey", `{"code":"123456"}`, 409, "carkey_code_missing")
	d.rest("POST", "/v1/vehicles/"+vin+"/carkey/challenge", "", 202, "")
	shown := l.outbox.List(vin)
	if len(shown) != 1 || shown[0].Channel != "vehicle" || len(shown[0].Code) != 6 {
		t.Fatalf("vehicle channel: %+v", shown)
	}
	wrongCode := "000000"
	if shown[0].Code == wrongCode {
		wrongCode = "111111"
	}
	if a := d.rest("POST", "/v1/vehicles/"+vin+"/carkey", js(map[string]string{"code": wrongCode}), 400, "carkey_code_wrong"); a.body["detail"] == "" {
		t.Fatal("no detail on a wrong car-key code")
	}
	other.rest("POST", "/v1/vehicles/"+vin+"/carkey", js(map[string]string{"code": shown[0].Code}), 409, "carkey_code_missing") // bound to the device that asked
	d.rest("POST", "/v1/vehicles/"+vin+"/carkey", js(map[string]string{"code": shown[0].Code}), 200, "")
	d.rest("POST", "/v1/vehicles/"+vin+"/carkey", js(map[string]string{"code": shown[0].Code}), 409, "carkey_code_missing") // single use
	wantStep(t, d.get(stepsAPI, map[string]any{"stepsID": rcID}), "mediumCarKey", "alreadyDone", 3)

	// pims.authentication.otp withPIN, and the seed's advice: when it fails,
	// refresh the steps with resetSteps: true and do what they say.
	d.failed("/pims/get", "pims.authentication.otp", map[string]any{"type": "withPIN", "pinCode": "424242"}, 2322) // de-enrolled above
	refreshed := d.get(stepsAPI, map[string]any{"stepsID": rcID, "resetSteps": true, "stepsStatus": "todo"})
	wantStep(t, refreshed, "deviceActivation", "todo", 2)
	d.get(smsAPI, map[string]any{"type": "enrollment"})
	d.set(smsAPI, map[string]any{"action": "enrollment", "smsCode": l.lastCode("0612345678")})
	d.set(enrollAPI, map[string]any{"action": "enroll", "pinCode": "8642"})
	if e := d.failed("/pims/get", "pims.authentication.otp", map[string]any{"type": "withPIN", "pinCode": "1111"}, 2312); e["attemptsLeft"] != 2.0 {
		t.Fatalf("attempts left %v", e["attemptsLeft"])
	}
	token := d.get("pims.authentication.otp", map[string]any{"type": "withPIN", "pinCode": "8642"})
	if otp, _ := token["otp"].(string); len(otp) < 32 || token["expiresAt"] == nil {
		t.Fatalf("otp result: %v", token)
	}
	if a := d.call("/pims/get", stepAPI, map[string]any{"stepsID": rcID}); a.body["result"] != nil {
		t.Fatalf("every step done, next step should be null: %s", a.raw)
	}

	// RemoveProperty (the car was sold) ends it all.
	d.ok("/pims/set", vehicleAPI, map[string]any{"action": "removeProperty", "vin": vin})
	d.failed("/pims/get", stepsAPI, map[string]any{"stepsID": stepsID}, 2333)
	d.failed("/pims/get", stepsAPI, map[string]any{"carAssociationID": car}, 2332)
	d.failed("/pims/set", vehicleAPI, map[string]any{"action": "removeProperty", "vin": vin}, 2330)
	if list := d.rest("GET", "/v1/vehicles", "", 200, "").body["vehicles"].([]any); len(list) != 0 {
		t.Fatalf("vehicles after RemoveProperty: %v", list)
	}
	// Now the other account may associate it.
	thief.rest("POST", "/v1/vehicles", js(map[string]string{"vin": vin}), 201, "")

	l.rebuildGivesTheSameRows(projections.Steps{}, projections.Vehicles{}, projections.Enrollment{}, projections.Accounts{})
}

// rebuildGivesTheSameRows rebuilds projections from position 0 and checks
// every table against what the live runner built.
func (l *ledger) rebuildGivesTheSameRows(ps ...projections.Projection) {
	l.t.Helper()
	ctx := context.Background()
	for _, p := range ps {
		live := map[string][]string{}
		for _, table := range p.Tables() {
			rows, err := projections.Dump(ctx, l.pool, table)
			if err != nil {
				l.t.Fatal(err)
			}
			live[table] = rows
		}
		if err := projections.Rebuild(ctx, l.pool, l.store, p, nil); err != nil {
			l.t.Fatal(err)
		}
		for _, table := range p.Tables() {
			rebuilt, _ := projections.Dump(ctx, l.pool, table)
			if !reflect.DeepEqual(live[table], rebuilt) {
				l.t.Fatalf("%s: rebuilt %d rows differ from the %d live rows", table, len(rebuilt), len(live[table]))
			}
		}
	}
}

// jsNumber turns a JSON number into the string form the seed's samples send.
func jsNumber(v any) string { return js(v) }
