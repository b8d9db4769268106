// Shared by a telescope's page (app.js) and the fleet's (fleet.js): reading the JSON API, and
// polling it, with the one banner that says when seestar-watch cannot be reached.
"use strict";

async function getJSON(url) {
  const answer = await fetch(url, { cache: "no-store" });
  if (!answer.ok) throw new Error(`${url}: HTTP ${answer.status}`);
  return answer.json();
}

// draw() now and every `every` ms after each try, whether it worked or not
function poll(draw, every) {
  async function once() {
    try {
      await draw();
      document.getElementById("problem").hidden = true;
    } catch (error) {
      const problem = document.getElementById("problem");
      problem.textContent = `Cannot reach seestar-watch: ${error.message}; trying again.`;
      problem.hidden = false;
    }
    setTimeout(once, every);
  }
  once();
}
