package api_test

import (
	"testing"
)

// device is one phone running the SDK with a session.
type device struct {
	l     *ledger
	id    string
	token string
}

func (l *ledger) device(email, id string) *device {
	a := l.do("POST", "/v1/sessions", js(map[string]string{"email": email, "password": pw, "deviceId": id})).want(l.t, 201, "")
	return &device{l: l, id: id, token: a.body["sessionToken"].(string)}
}

func (d *device) call(path, api string, params map[string]any) answer {
	d.l.t.Helper()
	body := map[string]any{"api": api}
	if params != nil {
		body["parameters"] = params
	}
	a := d.l.do("POST", path, js(body), "Authorization", "Bearer "+d.token, "X-Device-Id", d.id)
	if a.status != 200 {
		d.l.t.Fatalf("%s %s: HTTP %d %s", path, api, a.status, a.raw)
	}
	if tx, _ := a.body["transactionId"].(string); tx == "" {
		d.l.t.Fatalf("%s %s: no transactionId: %s", path, api, a.raw)
	}
	return a
}

// ok checks a SUCCEEDED envelope and returns its result.
func (d *device) ok(path, api string, params map[string]any) map[string]any {
	d.l.t.Helper()
	a := d.call(path, api, params)
	if a.body["status"] != "SUCCEEDED" {
		d.l.t.Fatalf("%s %s %v: %s", path, api, params, a.raw)
	}
	result, ok := a.body["result"].(map[string]any)
	if !ok {
		d.l.t.Fatalf("%s %s: result is not an object: %s", path, api, a.raw)
	}
	return result
}

// failed checks a FAILED envelope with the code and returns the error.
func (d *device) failed(path, api string, params map[string]any, code float64) map[string]any {
	d.l.t.Helper()
	a := d.call(path, api, params)
	e, _ := a.body["error"].(map[string]any)
	if a.body["status"] != "FAILED" || e["code"] != code || e["message"] == "" {
		d.l.t.Fatalf("%s %s %v: want FAILED %v, got %s", path, api, params, code, a.raw)
	}
	return e
}

func (d *device) get(api string, params map[string]any) map[string]any {
	return d.ok("/pims/get", api, params)
}
func (d *device) set(api string, params map[string]any) map[string]any {
	return d.ok("/pims/set", api, params)
}

// lastCode reads the last SMS code sent to a phone from the dev outbox.
func (l *ledger) lastCode(phone string) string {
	l.t.Helper()
	msgs := l.outbox.List(phone)
	if len(msgs) == 0 || msgs[0].Channel != "sms" || len(msgs[0].Code) != 6 {
		l.t.Fatalf("no SMS code sent to %s: %+v", phone, msgs)
	}
	return msgs[0].Code
}

const (
	accountAPI = "pims.authentication.account"
	phoneAPI   = "pims.authentication.trustedphonenumber"
	smsAPI     = "pims.authentication.smscode"
	enrollAPI  = "pims.authentication.enrollment"
	pinAPI     = "pims.authentication.pincode"
	vehicleAPI = "pims.subscription.vehicle"
)

func (d *device) isDeviceActivated() bool {
	return d.get(accountAPI, map[string]any{"actionType": "strong", "type": "isDeviceActivated"})["isDeviceActivated"].(bool)
}

func (d *device) isAccountBlocked() string {
	return d.get(accountAPI, map[string]any{"actionType": "strong", "type": "isAccountBlocked"})["isAccountBlocked"].(string)
}

func (d *device) phone() any { return d.get(phoneAPI, nil)["phoneNumber"] }

func wantEmpty(t *testing.T, result map[string]any) {
	t.Helper()
	if len(result) != 0 {
		t.Fatalf("result %v, want {}", result)
	}
}

// TestSeed001Shortcut walks steps 1 → 4·1 of the enrollment tutorial.
func TestSeed001Shortcut(t *testing.T) { seed001Shortcut(t, nil) }

func seed001Shortcut(t *testing.T, open storeFactory) {
	l := newLedger(t, open)
	l.signIn("short@example.com", "phone-A")
	d := l.device("short@example.com", "phone-A")

	if d.isDeviceActivated() { // 1
		t.Fatal("a new device is activated")
	}
	if got := d.isAccountBlocked(); got != "NotBlocked" { // 2
		t.Fatalf("isAccountBlocked %q", got)
	}
	if got := d.phone(); got != nil { // 3
		t.Fatalf("phoneNumber %v, want null", got)
	}
	// 4·1
	wantEmpty(t, d.get(smsAPI, map[string]any{"type": "phoneNumberCertification", "phoneNumber": "0123456789"}))
	wantEmpty(t, d.set(enrollAPI, map[string]any{
		"action": "enrollWithPhoneNumber", "pinCode": "424242", "smsCode": l.lastCode("0123456789"), "phoneNumber": "0123456789",
	}))
	if !d.isDeviceActivated() {
		t.Fatal("the device is not activated after enrollWithPhoneNumber")
	}
	if got := d.phone(); got != "0123456789" {
		t.Fatalf("phoneNumber %v", got)
	}
	// The shortcut is refused once a phone is registered.
	d.get(smsAPI, map[string]any{"type": "phoneNumberCertification", "phoneNumber": "0611111111"})
	d.failed("/pims/set", enrollAPI, map[string]any{
		"action": "enrollWithPhoneNumber", "pinCode": "424242", "smsCode": l.lastCode("0611111111"), "phoneNumber": "0611111111",
	}, 2320)
}

// TestSeed001FullMethodAndAccountManagement walks steps 1 → 8 through 4·2
// on a fresh account, a second device, the 2312/2317 paths, then A to E.
func TestSeed001FullMethodAndAccountManagement(t *testing.T) { seed001Full(t, nil) }

func seed001Full(t *testing.T, open storeFactory) {
	l := newLedger(t, open)
	l.signIn("full@example.com", "phone-B")
	b := l.device("full@example.com", "phone-B")

	if b.isDeviceActivated() || b.isAccountBlocked() != "NotBlocked" || b.phone() != nil { // 1, 2, 3
		t.Fatal("a fresh account is not blank")
	}
	// 4·2 register the trusted phone
	wantEmpty(t, b.get(smsAPI, map[string]any{"type": "phoneNumberCertification", "phoneNumber": "0123456789"}))
	wantEmpty(t, b.set(smsAPI, map[string]any{"type": "addPhoneNumber", "smsCode": l.lastCode("0123456789"), "phoneNumber": "0123456789"}))
	if b.phone() != "0123456789" {
		t.Fatal("phone not registered")
	}
	// 5 enrollment SMS, 6 check PIN
	wantEmpty(t, b.get(smsAPI, map[string]any{"type": "enrollment", "phoneNumber": "0123456789"}))
	if got := b.set(smsAPI, map[string]any{"action": "enrollment", "smsCode": l.lastCode("0123456789")}); got["status"] != "NotEnrolled" {
		t.Fatalf("step 6: %v", got)
	}
	// 7 register a new PIN
	if got := b.set(enrollAPI, map[string]any{"action": "enroll", "pinCode": "1234"}); got["status"] != "AlreadyEnrolled" {
		t.Fatalf("step 7: %v", got)
	}
	if !b.isDeviceActivated() {
		t.Fatal("device B not activated after step 7")
	}

	// A second device of the same account: 5, 6 (AlreadyEnrolled), 8.
	c := l.device("full@example.com", "phone-C")
	if c.isDeviceActivated() {
		t.Fatal("device C activated before enrolling")
	}
	// 8 before any enrollment SMS on this device is refused.
	c.failed("/pims/set", enrollAPI, map[string]any{"action": "enroll", "pinCode": "1234"}, 2323)
	c.get(smsAPI, map[string]any{"type": "enrollment"})
	if got := c.set(smsAPI, map[string]any{"action": "enrollment", "smsCode": l.lastCode("0123456789")}); got["status"] != "AlreadyEnrolled" {
		t.Fatalf("step 6 on device C: %v", got)
	}
	// Wrong PINs: 2312 with the attempts left, then 2317 and PINBlocked.
	if e := c.failed("/pims/set", enrollAPI, map[string]any{"action": "enroll", "pinCode": "9999"}, 2312); e["attemptsLeft"] != 2.0 {
		t.Fatalf("attempts left %v, want 2", e["attemptsLeft"])
	}
	if e := c.failed("/pims/set", enrollAPI, map[string]any{"action": "enroll", "pinCode": "9998"}, 2312); e["attemptsLeft"] != 1.0 {
		t.Fatalf("attempts left %v, want 1", e["attemptsLeft"])
	}
	c.failed("/pims/set", enrollAPI, map[string]any{"action": "enroll", "pinCode": "9997"}, 2317)
	if got := c.isAccountBlocked(); got != "PINBlocked" {
		t.Fatalf("isAccountBlocked %q, want PINBlocked", got)
	}
	// Every PIN call now answers 2317, even with the right PIN.
	c.failed("/pims/set", enrollAPI, map[string]any{"action": "enroll", "pinCode": "1234"}, 2317)
	b.failed("/pims/set", pinAPI, map[string]any{"action": "update", "oldPIN": "1234", "newPIN": "5555"}, 2317)

	// A: remove all enrollments; the phone stays, enrollment restarts at 3.
	wantEmpty(t, c.set(enrollAPI, map[string]any{"action": "remove"}))
	if c.isAccountBlocked() != "NotBlocked" || b.isDeviceActivated() || c.phone() != "0123456789" {
		t.Fatal("remove all enrollments did not reset devices and block, or lost the phone")
	}
	c.get(smsAPI, map[string]any{"type": "enrollment"})
	if got := c.set(smsAPI, map[string]any{"action": "enrollment", "smsCode": l.lastCode("0123456789")}); got["status"] != "NotEnrolled" {
		t.Fatalf("after A, step 6 says %v; the PIN should be gone", got)
	}
	c.set(enrollAPI, map[string]any{"action": "enroll", "pinCode": "2468"})
	if !c.isDeviceActivated() {
		t.Fatal("device C not enrolled after A and steps 5–7")
	}

	// B: reset the PIN with a fresh SMS code; the new PIN works at step 8.
	b.failed("/pims/set", pinAPI, map[string]any{"action": "reset", "pinCode": "4321", "smsCode": "000000"}, 2322) // B is not enrolled
	c.get(smsAPI, map[string]any{"type": "enrollment"})
	wantEmpty(t, c.set(pinAPI, map[string]any{"action": "reset", "pinCode": "4321", "smsCode": l.lastCode("0123456789")}))

	// C: update the PIN; a wrong old PIN counts as a wrong PIN.
	if e := c.failed("/pims/set", pinAPI, map[string]any{"action": "update", "oldPIN": "2468", "newPIN": "0987"}, 2312); e["attemptsLeft"] != 2.0 {
		t.Fatalf("attempts left %v", e["attemptsLeft"])
	}
	wantEmpty(t, c.set(pinAPI, map[string]any{"action": "update", "oldPIN": "4321", "newPIN": "0987"}))
	b.get(smsAPI, map[string]any{"type": "enrollment"})
	b.set(smsAPI, map[string]any{"action": "enrollment", "smsCode": l.lastCode("0123456789")})
	b.set(enrollAPI, map[string]any{"action": "enroll", "pinCode": "0987"}) // 8 with the updated PIN
	if !b.isDeviceActivated() {
		t.Fatal("device B not enrolled with the updated PIN")
	}

	// D: modify the phone number.
	wantEmpty(t, c.get(smsAPI, map[string]any{"type": "phoneNumberCertification", "phoneNumber": "0698765432"}))
	wantEmpty(t, c.set(smsAPI, map[string]any{"type": "modifyPhoneNumber", "smsCode": l.lastCode("0698765432"), "phoneNumber": "0698765432"}))
	if got := c.phone(); got != "0698765432" {
		t.Fatalf("phone after D: %v", got)
	}

	// E: remove vehicle association of a VIN the account does not have.
	c.failed("/pims/set", vehicleAPI, map[string]any{"action": "removeProperty", "vin": "VR1AB12C3D4567890"}, 2330)
}

func TestSDKGatewayTransportErrors(t *testing.T) {
	l := newLedger(t, nil)
	l.signIn("gw@example.com", "d1")
	d := l.device("gw@example.com", "d1")
	body := js(map[string]any{"api": accountAPI, "parameters": map[string]any{"type": "isDeviceActivated"}})
	l.do("POST", "/pims/get", body).want(t, 401, "invalid_session")
	l.do("POST", "/pims/get", body, "Authorization", "Bearer "+d.token, "X-Device-Id", "other").want(t, 401, "device_mismatch")
	l.do("POST", "/pims/get", `{"api": `, "Authorization", "Bearer "+d.token, "X-Device-Id", "d1").want(t, 400, "malformed_json")
	wrongType := js(map[string]any{"api": enrollAPI, "parameters": map[string]any{"action": "enroll", "pinCode": 1234}})
	l.do("POST", "/pims/set", wrongType, "Authorization", "Bearer "+d.token, "X-Device-Id", "d1").want(t, 400, "invalid_field")
	d.failed("/pims/get", "pims.nope", nil, 2300)
	d.failed("/pims/set", accountAPI, map[string]any{"type": "isDeviceActivated"}, 2300) // a get api sent to set
	d.failed("/pims/set", enrollAPI, map[string]any{"action": "dance"}, 2301)
	d.failed("/pims/get", smsAPI, map[string]any{"type": "enrollment"}, 2321) // no phone yet
	d.failed("/pims/get", smsAPI, map[string]any{"type": "phoneNumberCertification", "phoneNumber": "12ab"}, 2303)
}
