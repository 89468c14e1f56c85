"""Repository and launch buttons only when the book's repository is known, pointing at committed notebooks.

The repository is ``repository.url`` of ``_config.yml``, or else ``$DIFFPATH_REPOSITORY_URL`` (the publishing
workflow, .github/workflows/book.yml, sets it to the repository it runs in).

jupyter-book fills an unset ``repository.url`` with its own repository's address; this extension treats that
default and an empty value alike as "no repository": the repository, issue and edit buttons and every launch
button (Binder, Colab, JupyterHub) are turned off, so nothing broken shows. The download button (the page's
``.ipynb`` or ``.md``) needs no repository and stays.

With a URL set, launch links of executed pages (``book/generated/<name>``, built and not committed) are pointed
at their committed source notebook, ``notebooks/<name>.ipynb``, which runs as it is (parameters default to the
offline profile, paths are read against the repository root).
"""
import os

JUPYTER_BOOK_DEFAULT = "https://github.com/executablebooks/jupyter-book"
REPOSITORY_ENV = "DIFFPATH_REPOSITORY_URL"
GENERATED, SOURCES = "book/generated/", "notebooks/"


def _repository_url(config) -> str:
    url = (config.html_theme_options or {}).get("repository_url", "") or ""
    url = "" if url.rstrip("/") == JUPYTER_BOOK_DEFAULT else url
    return url or os.environ.get(REPOSITORY_ENV, "")


def _repository_buttons(app, config):
    """With a repository URL: its button on. Without: every repository and launch button off."""
    options = dict(config.html_theme_options or {})
    url = _repository_url(config)
    if url:
        options.update(repository_url=url, use_repository_button=True)
    else:
        options.update(repository_url="", use_repository_button=False, use_issues_button=False,
                       use_edit_page_button=False, launch_buttons={})
    config.html_theme_options = options


def _launch_committed_notebooks(app, pagename, templatename, context, doctree):
    if not pagename.startswith("book/generated/") or not _repository_url(app.config):
        return

    def rewrite(buttons):
        for button in buttons:
            if isinstance(button, dict):
                if isinstance(button.get("url"), str):
                    button["url"] = button["url"].replace(GENERATED, SOURCES)
                rewrite(button.get("buttons", []))

    rewrite(context.get("header_buttons", []))


def setup(app):
    app.connect("config-inited", _repository_buttons, priority=900)  # after jupyter-book has filled the options
    app.connect("html-page-context", _launch_committed_notebooks, priority=600)  # after the theme's buttons (501)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
