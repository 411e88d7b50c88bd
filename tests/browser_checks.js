// What a reader sees on one built page (run by tests/test_browser.py after the page has loaded).
(async () => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  for (let i = 0; i < 200 && !(window.MathJax && MathJax.startup && MathJax.startup.promise); i++) {
    await sleep(50);
  }
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  document.querySelectorAll("details").forEach((d) => (d.open = true)); // hidden code counts too
  await sleep(50);

  const article = document.querySelector("article.bd-article") || document.body;
  const width = article.getBoundingClientRect().width;
  const snip = (t) => t.replace(/\s+/g, " ").trim().slice(0, 120);
  const textOf = (root, drop) => {
    const c = root.cloneNode(true);
    c.querySelectorAll(drop).forEach((e) => e.remove());
    return c.textContent;
  };
  const grep = (text, re) => [...text.matchAll(re)].map((m) => snip(text.slice(m.index - 40, m.index + 80)));

  // prose and outputs, without code, typeset math or MathJax's own hidden copies
  const prose = textOf(article, "pre, code, .cell_input, mjx-container, script, style, .highlight");
  const outputs = [...article.querySelectorAll(".cell_output")].map((e) => e.textContent).join("\n");
  const maths = [...article.querySelectorAll(".math")];
  const pres = [...article.querySelectorAll("pre")];
  const images = [...article.querySelectorAll("img")];
  return {
    mathjax_src: [...document.querySelectorAll("script[src*='mathjax' i]")].map((s) => s.src),
    mathjax_version: (window.MathJax && MathJax.version) || null,
    math: maths.length,
    untypeset: maths.filter((m) => !m.querySelector("mjx-container")).map((m) => snip(m.textContent)),
    tex_errors: [...article.querySelectorAll("mjx-merror")].map((m) => m.getAttribute("data-mjx-error")),
    raw_tex: grep(prose, /\\\(|\\\)|\\\[|\\\]|\$\$|\\(frac|mathrm|sqrt|lVert|operatorname)\b/g),
    warnings: grep(prose + "\n" + outputs, /\b[A-Z]\w*Warning\b|warnings\.warn/g),
    progress_bars: grep(outputs, /\d+%\|[^|]*\||\d+(\.\d+)?\s*it\/s/g),
    temp_paths: grep(prose + "\n" + outputs, /\/tmp\/|\/var\/folders\/|attnpaper-[a-z0-9_]{8}/g),
    wide_code: pres.filter((p) => p.scrollWidth > p.clientWidth + 1)
      .map((p) => snip(p.textContent.split("\n").reduce((a, b) => (b.length > a.length ? b : a), ""))),
    wide_math: [...article.querySelectorAll("div.math, mjx-container[display='true']")]
      .filter((m) => m.scrollWidth > m.clientWidth + 1 || m.getBoundingClientRect().width > width + 1)
      .map((m) => snip(m.textContent)),
    wide_tables: [...article.querySelectorAll("table")]
      .filter((t) => t.getBoundingClientRect().width > width + 1
        || t.parentElement.scrollWidth > t.parentElement.clientWidth + 1)
      .map((t) => snip(t.textContent)),
    uncaptioned_images: images.filter((i) => !i.closest("figure")?.querySelector(".caption-number"))
      .map((i) => i.getAttribute("src")),
    broken_images: images.filter((i) => !(i.complete && i.naturalWidth > 0)).map((i) => i.getAttribute("src")),
    // a cell whose text was cut (pandas' max_colwidth, a width limit): it ends in "..." or "…"
    truncated_cells: [...article.querySelectorAll("td, th")]
      .filter((c) => /(\.\.\.|…)$/.test(c.textContent.trim()))
      .map((c) => snip(c.textContent)),
    // a header that is a raw identifier (`wall_ms`, `ci_low`), not a name with its unit
    raw_headers: [...article.querySelectorAll("table thead th")].map((th) => th.textContent.trim())
      .filter((t) => /^[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)+$/.test(t)),
    // a number printed as computed (six or more significant digits: "882.492", "0.700914") or in
    // e+ notation ("2.72e+03"): not rounded for reading
    unrounded_cells: [...article.querySelectorAll("td")].map((td) => td.textContent.trim())
      .filter((t) => /^[+-]?\d*\.?\d+e\+\d+$/i.test(t)
        || (/^[+-]?\d+\.\d+(e-\d+)?$/i.test(t) && t.split(/e/i)[0].replace(/\D/g, "").replace(/^0+/, "").length >= 6)),
    // the answer box: where it sits among the page's sections, how many table rows, its whole text
    answer_boxes: [...article.querySelectorAll(".answer-box")].map((b) => ({
      rows: b.querySelectorAll("tbody tr").length,
      text: b.textContent.replace(/\s+/g, " ").trim(),
      sections_before: [...article.querySelectorAll("h2")]
        .filter((h) => h.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING).length,
      sections: article.querySelectorAll("h2").length,
      height: b.getBoundingClientRect().height,
    })),
    // the verdict's paragraph: where it ends on the page, from the top (visible without scrolling?)
    verdict_bottom: [...article.querySelectorAll("p")].filter((p) => p.textContent.trim().startsWith("Verdict."))
      .map((p) => p.getBoundingClientRect().bottom + window.scrollY),
    nan_cells: [...article.querySelectorAll("td")].filter((td) => /^(NaN|nan|<NA>)$/.test(td.textContent.trim()))
      .map((td) => snip(td.closest("table").textContent)),
  };
})()
