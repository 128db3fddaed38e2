from django.urls import path

from syncrules.api.views import RulesValidateView, RulesView

urlpatterns = [
    path("connections/<int:pk>/rules/", RulesView.as_view(), name="rules"),
    path("connections/<int:pk>/rules/validate/", RulesValidateView.as_view(), name="rules-validate"),
]
