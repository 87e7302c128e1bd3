package api

import "html/template"

// promptPage renders every step of the consent prompt. It is small, needs
// no script, works on a phone, and labels every field for screen readers.
var promptPage = template.Must(template.New("prompt").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{if .Client}}{{.Client}} asks for access{{else}}Consent{{end}}</title>
<style>
body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1b1d21}
main{max-width:28rem;margin:0 auto;padding:1.5rem}
h1{font-size:1.35rem}
form{margin:1rem 0}
label{display:block;margin:.75rem 0 .25rem;font-weight:600}
input[type=email],input[type=password]{width:100%;box-sizing:border-box;padding:.7rem;font-size:1rem;border:1px solid #8a8f98;border-radius:.4rem}
button{font-size:1rem;padding:.75rem 1.2rem;border-radius:.4rem;border:0;background:#1f4fd1;color:#fff;margin:.5rem .5rem 0 0;min-height:44px}
button.secondary{background:#e3e6eb;color:#1b1d21}
.error{background:#fde8e8;border-left:4px solid #c81e1e;padding:.6rem .8rem}
ul{padding-left:1.2rem}
fieldset{border:1px solid #c9ced6;border-radius:.4rem}
</style>
</head>
<body>
<main>
{{if eq .Step "error"}}
  <h1>This page can no longer be used</h1>
  <p class="error" role="alert">{{.Error}}</p>
{{else}}
  {{if .Client}}<p><strong>{{.Client}}</strong> asks for access to your account.</p>{{end}}
  {{if .Error}}<p class="error" role="alert">{{.Error}}</p>{{end}}

  {{if eq .Step "signin"}}
  <h1>Sign in</h1>
  <p>Your credentials are never shared with {{.Client}}.</p>
  <form method="post" action="/oauth2/prompt">
    <input type="hidden" name="csrf" value="{{.CSRF}}">
    <input type="hidden" name="action" value="signin">
    <label for="email">E-mail</label>
    <input id="email" name="email" type="email" autocomplete="username" required value="{{.Email}}">
    <label for="password">Password</label>
    <input id="password" name="password" type="password" autocomplete="current-password" required>
    <button type="submit">Sign in</button>
  </form>
  <form method="post" action="/oauth2/prompt">
    <input type="hidden" name="csrf" value="{{.CSRF}}">
    <input type="hidden" name="action" value="show-signup">
    <button type="submit" class="secondary">Create an account</button>
  </form>

  {{else if eq .Step "signup"}}
  <h1>Create your account</h1>
  <form method="post" action="/oauth2/prompt">
    <input type="hidden" name="csrf" value="{{.CSRF}}">
    <input type="hidden" name="action" value="signup">
    <label for="email">E-mail</label>
    <input id="email" name="email" type="email" autocomplete="email" required value="{{.Email}}">
    <label for="password">Password (10 characters or more)</label>
    <input id="password" name="password" type="password" autocomplete="new-password" minlength="10" required>
    <button type="submit">Create account</button>
  </form>

  {{else if eq .Step "activation"}}
  <h1>Activation required</h1>
  <p>We sent you an e-mail. Follow its link to activate your account, then go back to {{.Client}} and start again.</p>

  {{else if eq .Step "no-vehicle"}}
  <h1>Add your vehicle first</h1>
  <p>{{.Client}} needs access to a vehicle, and your account has none. Add your vehicle in the manufacturer app, then go back to {{.Client}} and start again.</p>

  {{else if eq .Step "vehicle"}}
  <h1>Which vehicle?</h1>
  <form method="post" action="/oauth2/prompt">
    <input type="hidden" name="csrf" value="{{.CSRF}}">
    <input type="hidden" name="action" value="vehicle">
    <fieldset><legend>Your vehicles</legend>
    {{range $i, $v := .Vehicles}}
      <label><input type="radio" name="vin" value="{{$v}}" {{if eq $i 0}}checked{{end}}> {{$v}}</label>
    {{end}}
    </fieldset>
    <button type="submit">Continue</button>
  </form>

  {{else if eq .Step "services"}}
  <h1>Activate vehicle services</h1>
  <p>Your vehicle {{.VIN}} sends data only for the services you activate. {{.Client}} needs:</p>
  <ul>{{range .Missing}}<li>{{if eq . "vehicleStatus"}}Vehicle status{{else}}Remote commands{{end}}</li>{{end}}</ul>
  <p>Services are activated once; they will not be asked again.</p>
  <form method="post" action="/oauth2/prompt">
    <input type="hidden" name="csrf" value="{{.CSRF}}">
    <input type="hidden" name="action" value="activate">
    <button type="submit">Activate</button>
  </form>

  {{else if eq .Step "certification"}}
  <h1>Certify your vehicle</h1>
  <p>To make sure you own vehicle {{.VIN}}, finish these steps in the manufacturer app. They are done once.</p>
  <ul>{{range .Missing}}<li>{{.}}</li>{{end}}</ul>
  <form method="post" action="/oauth2/prompt">
    <input type="hidden" name="csrf" value="{{.CSRF}}">
    <input type="hidden" name="action" value="check">
    <button type="submit">Check again</button>
  </form>

  {{else if eq .Step "consent"}}
  <h1>Allow {{.Client}}?</h1>
  <p>{{.Client}} will be able to access:</p>
  <ul>{{range .Scopes}}<li>{{.}}</li>{{end}}</ul>
  {{if .VIN}}<p>Vehicle: {{.VIN}}</p>{{end}}
  <p>You accept or decline the whole list. You can revoke this access at any time in the manufacturer app.</p>
  <form method="post" action="/oauth2/prompt">
    <input type="hidden" name="csrf" value="{{.CSRF}}">
    <input type="hidden" name="action" value="consent">
    <button type="submit" name="decision" value="accept">Accept</button>
    <button type="submit" name="decision" value="deny" class="secondary">Decline</button>
  </form>
  {{end}}
{{end}}
</main>
</body>
</html>
`))
