// Keys on the review page: Enter confirms the suggested label, a label's key (1-9, 0, a-z)
// picks it, the right arrow skips. One submission per page: later keys and clicks are ignored.
(function () {
  "use strict";
  var form = document.getElementById("label-form");
  if (!form) {
    return;
  }
  var sent = false;
  form.addEventListener("submit", function (event) {
    if (sent) {
      event.preventDefault();
    }
    sent = true;
  });
  document.addEventListener("keydown", function (event) {
    if (sent || event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    if (event.key === "ArrowRight") {
      event.preventDefault();
      window.location.assign(document.getElementById("skip").href);
      return;
    }
    var button = null;
    if (event.key === "Enter") {
      button = document.getElementById("confirm");
    } else if (event.key.length === 1) {
      button = form.querySelector('button[data-key="' + CSS.escape(event.key.toLowerCase()) + '"]');
    }
    if (!button) {
      return;
    }
    event.preventDefault();
    form.requestSubmit(button);
  });
}());
