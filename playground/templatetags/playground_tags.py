from django import template
from django.template.defaultfilters import filesizeformat

from playground.render import markdown_html

register = template.Library()


@register.filter
def markdown(text: str):
    """Markdown rendered and sanitised (see :func:`playground.render.markdown_html`)."""
    return markdown_html(text)


@register.filter
def size(pair) -> str:
    """``[w, h]`` as ``w×h``."""
    try:
        return f"{int(pair[0])}×{int(pair[1])}"
    except (TypeError, ValueError, IndexError):
        return ""


@register.filter
def kib(n) -> str:
    return filesizeformat(n)
