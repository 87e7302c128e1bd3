package vehicle_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/otp"
	"github.com/consentledger/ledger/domain/vehicle"
)

const vin = "VR1AB12C3D4567890"

var (
	now   = time.Date(2026, 7, 1, 10, 0, 0, 0, time.UTC)
	rules = otp.Rules{TTL: 5 * time.Minute, MaxFailures: 5, PerWindow: 5, Window: time.Hour,
		Params: account.PasswordParams{Memory: 1024, Time: 1, Threads: 1}, Errors: vehicle.CarKeyErrors}
	alice, bob = uuid.New(), uuid.New()
)

func apply(v *vehicle.Vehicle, evs ...any) {
	for _, e := range evs {
		v.Apply(e, now)
	}
}

func code(t *testing.T, err error) string {
	t.Helper()
	var de *domain.Error
	if !errors.As(err, &de) {
		t.Fatalf("not a domain error: %v", err)
	}
	return de.Code
}

func owned(t *testing.T) *vehicle.Vehicle {
	v := vehicle.New(vin)
	evs, err := v.Associate(alice, uuid.New())
	if err != nil {
		t.Fatal(err)
	}
	apply(v, evs...)
	return v
}

func TestVINs(t *testing.T) {
	for raw, ok := range map[string]bool{
		"VR1AB12C3D4567890": true, "vr1ab12c3d4567890": true, "1HGCM82633A004352": true,
		"VR1AB12C3D456789": false, "VR1AB12C3D45678901": false, "VR1AB12C3D456789O": false, "VR1AB12C3D456789I": false, "VR1AB12C3D456789Q": false, "VR1AB12C3D45678-0": false,
	} {
		if _, err := vehicle.NormalizeVIN(raw); (err == nil) != ok {
			t.Fatalf("%s: %v", raw, err)
		}
	}
}

func TestOneOwnerAtATime(t *testing.T) {
	v := owned(t)
	if evs, err := v.Associate(alice, uuid.New()); err != nil || len(evs) != 0 {
		t.Fatalf("associating again: %v, %v", evs, err)
	}
	if _, err := v.Associate(bob, uuid.New()); code(t, err) != "vehicle_associated_elsewhere" {
		t.Fatal(err)
	}
	if _, _, err := v.Subscribe(bob, vehicle.VehicleStatus); code(t, err) != "unknown_vin" {
		t.Fatal(err)
	}
	evs, err := v.RemoveProperty(alice)
	if err != nil {
		t.Fatal(err)
	}
	apply(v, evs...)
	if evs, err := v.Associate(bob, uuid.New()); err != nil || len(evs) != 1 {
		t.Fatalf("the next owner: %v, %v", evs, err)
	}
}

func TestSubscribingAgainGivesTheSameCarAssociation(t *testing.T) {
	v := owned(t)
	id, evs, err := v.Subscribe(alice, vehicle.RemoteCommands)
	if err != nil || len(evs) != 1 {
		t.Fatal(err)
	}
	apply(v, evs...)
	again, evs, err := v.Subscribe(alice, vehicle.RemoteCommands)
	if err != nil || len(evs) != 0 || again != id {
		t.Fatalf("again: %s %v %v, first %s", again, evs, err, id)
	}
	other, _, _ := v.Subscribe(alice, vehicle.VehicleStatus)
	if other == id {
		t.Fatal("two services share a carAssociationID")
	}
	removed, _ := v.RemoveProperty(alice)
	if ids := removed[0].(*vehicle.PropertyRemoved).CarAssociationIDs; len(ids) != 1 || ids[0] != id {
		t.Fatalf("RemoveProperty ends %v, want [%s]", ids, id)
	}
}

func TestCarKeyFollowsTheRulesOfCodes(t *testing.T) {
	v := owned(t)
	if _, err := v.ChallengeCarKey(rules, bob, "d", uuid.New(), "123456", now); code(t, err) != "unknown_vin" {
		t.Fatal("a stranger got a code shown in the car")
	}
	evs, err := v.ChallengeCarKey(rules, alice, "d", uuid.New(), "123456", now)
	if err != nil {
		t.Fatal(err)
	}
	apply(v, evs...)
	evs, err = v.ProveCarKey(rules, alice, "d", "654321", now)
	if code(t, err) != "carkey_code_wrong" || len(evs) != 1 {
		t.Fatalf("wrong code: %v %v", evs, err)
	}
	apply(v, evs...)
	if v.CarKeyProven() {
		t.Fatal("proven by a wrong code")
	}
	evs, err = v.ProveCarKey(rules, alice, "d", "123456", now.Add(rules.TTL))
	if code(t, err) != "carkey_code_expired" {
		t.Fatal(err)
	}
	evs, err = v.ProveCarKey(rules, alice, "d", "123456", now)
	if err != nil {
		t.Fatal(err)
	}
	apply(v, evs...)
	if !v.CarKeyProven() {
		t.Fatal("not proven")
	}
	if _, err := v.ProveCarKey(rules, alice, "d", "123456", now); code(t, err) != "carkey_code_missing" {
		t.Fatal("a code was used twice")
	}
}
