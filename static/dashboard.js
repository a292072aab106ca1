// Progressive enhancement for the Hearth dashboard. Everything works without
// this file; it only saves a click here and there.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
	// Search and filters apply as you type or tick, after a short pause.
	document.querySelectorAll("[data-autosubmit]").forEach(function (el) {
		var timer;
		var submit = function () {
			clearTimeout(timer);
			timer = setTimeout(function () { el.form.requestSubmit ? el.form.requestSubmit() : el.form.submit(); }, el.type === "search" ? 400 : 0);
		};
		el.addEventListener(el.type === "search" ? "input" : "change", submit);
	});
	// Tokens copy to the clipboard when clicked.
	document.querySelectorAll("[data-copy]").forEach(function (el) {
		el.title = "Click to copy";
		el.addEventListener("click", function () {
			if (!navigator.clipboard) { return; }
			navigator.clipboard.writeText(el.textContent.trim()).then(function () {
				var old = el.title;
				el.title = "Copied";
				el.classList.add("copied");
				setTimeout(function () { el.title = old; el.classList.remove("copied"); }, 1500);
			});
		});
	});
	// Keep the focus in the search box after an as-you-type reload.
	var q = document.querySelector("input[type=search][data-autosubmit]");
	if (q && q.value) {
		q.focus();
		q.setSelectionRange(q.value.length, q.value.length);
	}
});
