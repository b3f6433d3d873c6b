/* The chat's sign-in from a link: /chat/login?next=...#token=TOKEN fills the form with the
   token and sends it. The fragment never reaches a server or a log, and it is taken out of
   the address bar before anything else happens. */
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  const found = /^#token=([A-Za-z0-9._-]{1,4096})$/.exec(location.hash);
  if (!found) return;
  history.replaceState(null, "", location.pathname + location.search);
  const form = document.getElementById("chat-login");
  form.querySelector("#token").value = found[1];
  form.submit();
});
