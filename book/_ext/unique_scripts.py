"""Drop repeated script entries from each page (sphinx-thebe and togglebutton register their inline config twice, once with filename None and once with "", under
jupyter-book 1.0, which redeclares a ``const`` and raises a SyntaxError in the browser)."""


def _dedupe(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        attributes = getattr(script, "attributes", {}) or {}
        key = (str(getattr(script, "filename", script) or ""), tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"][:] = unique  # in place: handlers after this one still append to the same list


def setup(app):
    # early: Sphinx stops emitting html-page-context at the first handler that returns a template name
    app.connect("html-page-context", _dedupe, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
