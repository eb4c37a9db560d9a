"""
The dashboards' static files: the pages are assembled from the shared
fragments once, at start (L{twistedp2p.web.server.read_static}).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twistedp2p.web.server import include_fragments, read_static


class IncludeTests(SynchronousTestCase):
    def test_fragment_is_pasted_with_the_lines_indent(self) -> None:
        page = b"<main>\n    <!--#include _part.html -->\n</main>\n"
        files = {"_part.html": b"<p>\n  <b>x</b>\n\n</p>\n"}
        self.assertEqual(
            include_fragments("page.html", page, files),
            b"<main>\n    <p>\n      <b>x</b>\n\n    </p>\n</main>\n",
        )

    def test_missing_fragment_is_an_error(self) -> None:
        with self.assertRaises(ValueError) as caught:
            include_fragments("page.html", b"<!--#include _gone.html -->\n", {})
        self.assertIn("static/page.html includes '_gone.html'", str(caught.exception))

    def test_only_fragments_are_included(self) -> None:
        """
        A page cannot paste a served file; a path is no fragment name at
        all (the line stays a comment).
        """
        with self.assertRaises(ValueError):
            include_fragments("page.html", b"<!--#include app.css -->\n", {"app.css": b"x"})
        page = b"<!--#include ../server.py -->\n"
        self.assertEqual(include_fragments("page.html", page, {"../server.py": b"x"}), page)


class ShippedPagesTests(SynchronousTestCase):
    def test_pages_are_whole(self) -> None:
        """
        Both pages carry the shared head, event log, footer and token
        dialog; no include line is left; fragments are not served.
        """
        files = read_static()
        self.assertFalse([name for name in files if name.startswith("_")])
        for page, script in (("peer.html", b"/static/peer.js"), ("tracker.html", b"/static/tracker.js")):
            data, content_type = files[page]
            self.assertEqual(content_type, "text/html; charset=utf-8")
            self.assertNotIn(b"#include", data)
            for piece in (b'<meta charset="utf-8">', b"/static/common.js", script, b'id="log-kinds"',
                          b'id="token-dialog"', b"<footer>"):
                self.assertEqual(data.count(piece), 1, (page, piece))
            # The shared script comes before the page's own.
            self.assertLess(data.index(b"/static/common.js"), data.index(script))
