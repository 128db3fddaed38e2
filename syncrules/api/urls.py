from django.urls import path

from syncrules.api.views import RulesDryRunView, RulesValidateView, RulesView

urlpatterns = [
    path("connections/<int:pk>/rules/", RulesView.as_view(), name="rules"),
    path("connections/<int:pk>/rules/validate/", RulesValidateView.as_view(), name="rules-validate"),
    path("connections/<int:pk>/rules/dry-run/", RulesDryRunView.as_view(), name="rules-dry-run"),
]
