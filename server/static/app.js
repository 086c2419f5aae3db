// Chat page: streams answers from /v1/chat/completions (SSE over fetch) and links [n] markers to
// the highlighted source (/sources/{doc_id}?start=&end=), opened in a new tab.
(function () {
  "use strict";
  var HISTORY_TURNS = 6; // previous messages sent along (3 question/answer pairs)
  var SOURCE_HEAD = "\n\n来源：";
  var KEY_NAME = "rag_api_key";
  var history = [];
  var log = document.getElementById("log");
  var form = document.getElementById("ask");
  var input = document.getElementById("question");
  var send = document.getElementById("send");
  var notice = document.getElementById("notice");
  var keyForm = document.getElementById("keyform");
  var keyInput = document.getElementById("apikey");
  // The server's limit (RAG_MAX_QUESTION_CHARS), written into the page when it is served.
  var maxChars = parseInt(input.dataset.maxChars, 10) || 500;
  var apiKey = "";
  try { apiKey = sessionStorage.getItem(KEY_NAME) || ""; } catch (e) { apiKey = ""; }
  var pendingQuestion = null;

  function showNotice(text) {
    notice.textContent = text;
    notice.hidden = !text;
  }

  // Tell the user about the length limit instead of cutting the question silently.
  function checkLength() {
    var n = input.value.trim().length;
    var over = n > maxChars;
    input.classList.toggle("over", over);
    showNotice(over ? "问题最长 " + maxChars + " 字，现在 " + n + " 字，请删去 " + (n - maxChars) + " 字再发送。" : "");
    return !over;
  }

  // Citation links are plain navigations, which cannot send a header: the key also goes into a
  // cookie scoped to /sources (the server reads it there only).
  function saveKey(key) {
    apiKey = key;
    try { sessionStorage.setItem(KEY_NAME, key); } catch (e) { /* private mode: keep it in memory */ }
    document.cookie = KEY_NAME + "=" + encodeURIComponent(key) + "; path=/sources; SameSite=Strict";
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text != null) node.textContent = text;
    return node;
  }

  function scrollDown() { log.scrollTop = log.scrollHeight; }

  // The answer part of the assistant content (without the markdown source list).
  function answerPart(content) {
    var i = content.indexOf(SOURCE_HEAD);
    return i >= 0 ? content.slice(0, i) : content;
  }

  function addMessage(role) {
    var welcome = document.getElementById("welcome");
    if (welcome) welcome.remove();
    var msg = el("div", "msg " + role);
    var bubble = el("div", "bubble");
    msg.appendChild(bubble);
    log.appendChild(msg);
    return { msg: msg, bubble: bubble };
  }

  function citeLink(c, label) {
    var a = el("a", "cite", label);
    a.href = c.url;
    a.target = "_blank";
    a.rel = "noopener";
    a.title = c.text;
    a.dataset.citation = String(c.id);
    a.dataset.docId = c.doc_id;
    a.dataset.start = String(c.start);
    a.dataset.end = String(c.end);
    return a;
  }

  // Answer text with [n] markers turned into links to the cited spans.
  function renderAnswer(target, text, citations) {
    var byId = {};
    citations.forEach(function (c) { byId[c.id] = c; });
    target.textContent = "";
    var re = /\[(\d+)\]/g, last = 0, m;
    while ((m = re.exec(text)) !== null) {
      target.appendChild(document.createTextNode(text.slice(last, m.index)));
      var c = byId[Number(m[1])];
      target.appendChild(c ? citeLink(c, m[0]) : document.createTextNode(m[0]));
      last = re.lastIndex;
    }
    target.appendChild(document.createTextNode(text.slice(last)));
  }

  function renderSources(bubble, citations, abstained) {
    if (!citations.length) return;
    var box = el("section", "sources");
    box.appendChild(el("h2", null, abstained ? "可能相关的片段（仅供参考）" : "来源"));
    var ol = el("ol");
    citations.forEach(function (c) {
      var li = el("li");
      var a = citeLink(c, "[" + c.id + "] 《" + (c.title || c.doc_id) + "》");
      a.className = "source-link";
      li.appendChild(a);
      if (c.date) li.appendChild(el("span", "date", c.date));
      li.appendChild(el("q", null, c.text));
      ol.appendChild(li);
    });
    box.appendChild(ol);
    bubble.appendChild(box);
  }

  function showError(view, message) {
    view.msg.className = "msg assistant error";
    view.bubble.textContent = "出错了：" + message;
  }

  // Parse an SSE stream of chat.completion.chunk objects; calls onChunk(obj) per data line.
  async function readStream(resp, onChunk) {
    var reader = resp.body.getReader();
    var decoder = new TextDecoder("utf-8");
    var buf = "";
    for (;;) {
      var step = await reader.read();
      if (step.done) break;
      buf += decoder.decode(step.value, { stream: true });
      var idx;
      while ((idx = buf.indexOf("\n\n")) >= 0) {
        var event = buf.slice(0, idx);
        buf = buf.slice(idx + 2);
        event.split("\n").forEach(function (line) {
          if (line.indexOf("data:") !== 0) return;
          var data = line.slice(5).trim();
          if (data && data !== "[DONE]") onChunk(JSON.parse(data));
        });
      }
    }
  }

  async function ask(question) {
    var mine = addMessage("user");
    mine.bubble.textContent = question;
    var view = addMessage("assistant pending");
    var textEl = el("div", "answer-text");
    view.bubble.appendChild(textEl);
    scrollDown();
    var messages = history.slice(-HISTORY_TURNS).concat([{ role: "user", content: question }]);
    var content = "", final = null;
    try {
      var headers = { "Content-Type": "application/json", "Accept": "text/event-stream" };
      if (apiKey) headers["Authorization"] = "Bearer " + apiKey;
      var resp = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: headers,
        body: JSON.stringify({ model: "liaoyuan-rag", stream: true, messages: messages })
      });
      if (resp.status === 401) {
        showError(view, apiKey ? "API 密钥不对，请重新输入。" : "此服务需要 API 密钥，请在下方输入。");
        pendingQuestion = question;
        keyForm.hidden = false;
        keyInput.focus();
        return;
      }
      if (!resp.ok) {
        var err = await resp.json().catch(function () { return null; });
        showError(view, (err && err.error && err.error.message) || ("HTTP " + resp.status));
        return;
      }
      await readStream(resp, function (obj) {
        var choice = (obj.choices || [])[0] || {};
        if (choice.delta && choice.delta.content) {
          content += choice.delta.content;
          textEl.textContent = answerPart(content);
          scrollDown();
        }
        if (choice.finish_reason) final = obj;
      });
    } catch (e) {
      showError(view, "无法连接服务器（" + e.message + "）");
      return;
    }
    var citations = (final && final.citations) || [];
    var abstained = !!(final && final.abstained);
    view.msg.className = "msg assistant" + (abstained ? " abstained" : " answered");
    if (abstained) {
      textEl.textContent = "";
      view.bubble.insertBefore(el("div", "abstain-note", "未找到相关内容"), textEl);
      view.bubble.insertBefore(el("p", "abstain-hint", "档案中没有足够依据回答这个问题，可以换个说法或问得更具体些。"), textEl);
      textEl.remove();
    } else {
      renderAnswer(textEl, answerPart(content), citations);
    }
    renderSources(view.bubble, citations, abstained);
    history.push({ role: "user", content: question }, { role: "assistant", content: content });
    scrollDown();
  }

  form.addEventListener("submit", async function (ev) {
    ev.preventDefault();
    var q = input.value.trim();
    if (!q || send.disabled) return;
    if (!checkLength()) { input.focus(); return; }
    input.value = "";
    send.disabled = true;
    try { await ask(q); } finally { send.disabled = false; input.focus(); }
  });
  input.addEventListener("input", checkLength);
  keyForm.addEventListener("submit", async function (ev) {
    ev.preventDefault();
    var key = keyInput.value.trim();
    if (!key) return;
    saveKey(key);
    keyInput.value = "";
    keyForm.hidden = true;
    var q = pendingQuestion;
    pendingQuestion = null;
    if (q && !send.disabled) {
      send.disabled = true;
      try { await ask(q); } finally { send.disabled = false; input.focus(); }
    }
  });
  input.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });
  document.querySelectorAll(".example").forEach(function (b) {
    b.addEventListener("click", function () { input.value = b.textContent; form.requestSubmit(); });
  });
  document.getElementById("reset").addEventListener("click", function () {
    history = [];
    log.textContent = "";
    input.focus();
  });
})();
