// strongroom admin UI: open the dialog when htmx fills it, close it on request.
(function () {
  "use strict";
  document.addEventListener("htmx:afterSwap", function (event) {
    var dialog = document.getElementById("dialog");
    if (event.detail.target && event.detail.target.id === "dialog-body" && !dialog.open) {
      dialog.showModal();
    }
  });
  document.addEventListener("click", function (event) {
    if (event.target.closest && event.target.closest(".close-dialog")) {
      document.getElementById("dialog").close();
    }
  });
})();
