// Starts Swagger UI on /docs (the page's Content-Security-Policy allows no inline script).
// The schema's URL comes from data-openapi-url; a signed-in browser's CSRF token from
// data-csrf, sent with unsafe requests so "Try it out" works with the session cookie.
(function () {
  "use strict";
  var node = document.getElementById("swagger-ui");
  if (!node || typeof window.SwaggerUIBundle !== "function") {
    return;
  }
  var csrf = node.getAttribute("data-csrf");
  window.ui = window.SwaggerUIBundle({
    url: node.getAttribute("data-openapi-url") || "/openapi.json",
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    validatorUrl: null, // no badge fetched from validator.swagger.io
    presets: [window.SwaggerUIBundle.presets.apis],
    requestInterceptor: function (request) {
      var method = (request.method || "GET").toUpperCase();
      if (csrf && ["GET", "HEAD", "OPTIONS"].indexOf(method) < 0) {
        request.headers["X-CSRF-Token"] = csrf;
      }
      return request;
    },
  });
})();
