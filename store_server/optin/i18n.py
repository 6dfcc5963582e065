# ruff: noqa: E501 - translation strings read better unbroken
"""French and English texts of the subscriber pages, in plain language."""

from __future__ import annotations

TEXTS: dict[str, tuple[str, str]] = {
    # key: (fr, en)
    "title": (
        "Collective Mood — votre musique, chez nos partenaires",
        "Collective Mood — your music, at our partners",
    ),
    "lang_other": ("English", "Français"),
    "lang_other_code": ("en", "fr"),
    "intro": (
        "{merchant} vous propose de jouer votre musique pendant votre visite. Rien ne se passe sans votre accord, et vous pouvez le retirer à tout moment.",
        "{merchant} offers to play your music while you are here. Nothing happens without your consent, and you can withdraw it at any time.",
    ),
    "signin_h": (
        "Connectez-vous avec votre compte de streaming",
        "Sign in with your streaming account",
    ),
    "username": ("Identifiant", "Username"),
    "password": ("Mot de passe", "Password"),
    "signin_btn": ("Se connecter", "Sign in"),
    "signout_btn": ("Se déconnecter", "Sign out"),
    "bad_credentials": ("Identifiant ou mot de passe incorrect.", "Wrong username or password."),
    "rate_limited": (
        "Trop de tentatives. Réessayez dans quelques minutes.",
        "Too many attempts. Try again in a few minutes.",
    ),
    "csrf": (
        "Le formulaire a expiré ou ne vient pas de cette page. Rechargez la page et réessayez.",
        "The form expired or did not come from this page. Reload the page and try again.",
    ),
    "field_required": (
        "Remplissez l'identifiant et le mot de passe.",
        "Fill in the username and password.",
    ),
    "hello": ("Bonjour {name}", "Hello {name}"),
    "choose_h": ("Choisissez ce que vous acceptez", "Choose what you agree to"),
    "nothing_ticked": (
        "Rien n'est coché d'avance : chaque choix est le vôtre.",
        "Nothing is ticked in advance: every choice is yours.",
    ),
    "presence_q": (
        "Où votre téléphone ou objet connecté peut-il être détecté ?",
        "Where may your phone or wearable be detected?",
    ),
    "presence_merchant": ("Seulement chez {merchant}", "Only at {merchant}"),
    "presence_all": ("Chez tous les commerçants partenaires", "At all affiliated merchants"),
    "share_q": (
        "Que peut recevoir l'appareil de diffusion du commerçant ?",
        "What may the merchant's playback device receive?",
    ),
    "share_playlist": ("Ma playlist (titres et artistes)", "My playlist (titles and artists)"),
    "share_preferences": (
        "Seulement mes préférences (genres, ambiance), pas ma playlist",
        "Only my preferences (genres, mood), not my playlist",
    ),
    "stats_q": (
        "Contribuer aux statistiques anonymes du quartier ?",
        "Contribute to anonymous statistics of the area?",
    ),
    "stats_help": (
        "Vos visites et votre quartier de résidence entrent dans des rapports où chaque chiffre couvre au moins 5 personnes. Aucun commerçant ne voit qui vous êtes.",
        "Your visits and home area feed reports where every figure covers at least 5 people. No merchant sees who you are.",
    ),
    "yes": ("Oui", "Yes"),
    "no": ("Non", "No"),
    "area_q": (
        "Votre quartier ou commune de résidence (seulement si vous avez répondu oui)",
        "Your home district or town (only if you answered yes)",
    ),
    "area_none": ("— choisissez —", "— choose —"),
    "duration_q": ("Pour combien de temps ?", "For how long?"),
    "duration_today": ("Aujourd'hui seulement (jusqu'à minuit)", "Today only (until midnight)"),
    "duration_withdrawn": ("Jusqu'à ce que je retire mon accord", "Until I withdraw"),
    "agree_btn": ("J'accepte ces choix", "I agree to these choices"),
    "info_h": ("Ce qu'il faut savoir", "What you should know"),
    "info_controller": (
        "Responsable du traitement : {controller} ({email}).",
        "Controller: {controller} ({email}).",
    ),
    "info_processed": (
        "Ce qui est traité : un identifiant radio qui change toutes les ~17 minutes émis par votre appareil, votre présence (lieu, zone, heure), et selon vos choix votre playlist ou vos préférences, votre quartier de résidence.",
        "What is processed: a radio identifier broadcast by your device that changes every ~17 minutes, your presence (place, zone, time), and, as you choose, your playlist or your preferences, your home area.",
    ),
    "info_merchant_sees": (
        "Le commerçant ne reçoit qu'un pseudonyme, différent chez chaque commerçant, jamais votre nom.",
        "The merchant only receives a pseudonym, different at every merchant, never your name.",
    ),
    "info_retention": (
        "Durée de conservation : la présence en direct est effacée dès votre départ ; les visites (statistiques seulement) sont gardées {days} jours, et effacées dans l'heure si vous retirez cet accord ; la preuve de votre accord est gardée {days} jours après sa fin.",
        "Retention: live presence is deleted as soon as you leave; visits (statistics only) are kept {days} days, and deleted within the hour if you withdraw that consent; proof of your consent is kept {days} days after it ends.",
    ),
    "info_withdraw": (
        "Retirer votre accord : à tout moment, en un clic, sur {url} — effet immédiat partout. Vous pouvez aussi y télécharger ou effacer toutes vos données.",
        "To withdraw: at any time, in one click, at {url} — effective at once everywhere. You can also download or erase all your data there.",
    ),
    "policy": ("Politique de confidentialité", "Privacy policy"),
    "err_presence": (
        "Choisissez où vous pouvez être détecté.",
        "Choose where you may be detected.",
    ),
    "err_share": (
        "Choisissez ce que l'appareil peut recevoir.",
        "Choose what the device may receive.",
    ),
    "err_stats": (
        "Répondez à la question sur les statistiques.",
        "Answer the question about statistics.",
    ),
    "err_area": (
        "Choisissez votre quartier dans la liste (ou répondez non aux statistiques).",
        "Choose your area from the list (or answer no to statistics).",
    ),
    "err_area_unwanted": (
        "Ne donnez votre quartier que si vous acceptez les statistiques.",
        "Only give your area if you agree to statistics.",
    ),
    "err_duration": ("Choisissez une durée.", "Choose a duration."),
    "fix_errors": ("Quelques réponses manquent :", "Some answers are missing:"),
    "link_expired_h": ("Ce code a expiré", "This code has expired"),
    "link_expired": (
        "Le code QR que vous avez scanné n'est plus valable. Demandez au commerçant d'en afficher un nouveau.",
        "The QR code you scanned is no longer valid. Ask the merchant to show a new one.",
    ),
    "link_invalid_h": ("Ce code n'est pas valable", "This code is not valid"),
    "link_invalid": (
        "Ce lien a été modifié ou ne vient pas d'un commerçant partenaire. Scannez le code affiché par le commerçant.",
        "This link was altered or does not come from an affiliated merchant. Scan the code the merchant shows.",
    ),
    "link_replayed_h": ("Ce code a déjà servi", "This code was already used"),
    "link_replayed": (
        "Ce code ou ce formulaire a déjà été utilisé. Votre accord précédent est enregistré ; consultez-le dans votre espace.",
        "This code or form was already used. Your earlier consent is recorded; see it in your space.",
    ),
    "link_unknown_h": ("Commerçant indisponible", "Merchant unavailable"),
    "link_unknown": (
        "Ce commerçant ne participe pas (ou plus) au programme.",
        "This merchant does not (or no longer) take part in the programme.",
    ),
    "done_h": ("C'est fait : votre accord est enregistré", "Done: your consent is recorded"),
    "done_receipt": ("Votre reçu de consentement, signé :", "Your signed consent receipt:"),
    "emitter_h": ("Configurez votre émetteur", "Set up your emitter"),
    "emitter_help": (
        "Scannez ce code avec l'application Collective Mood de votre téléphone ou objet connecté. Il contient une clé secrète : ne le montrez à personne. Il n'est affiché qu'une fois.",
        "Scan this code with the Collective Mood app on your phone or wearable. It holds a secret key: show it to nobody. It is shown only once.",
    ),
    "emitter_lost_h": ("Téléphone ou objet perdu ?", "Lost your phone or wearable?"),
    "emitter_lost_help": (
        "Révoquez sa clé : il cesse aussitôt d'être reconnu chez les commerçants. Vous pouvez en configurer un nouveau.",
        "Revoke its key: it stops being recognised at merchants at once. You can set up a new one.",
    ),
    "emitter_replace_btn": (
        "Révoquer et configurer un nouvel émetteur",
        "Revoke and set up a new emitter",
    ),
    "emitter_revoke_btn": ("Révoquer seulement", "Revoke only"),
    "emitter_revoked_msg": (
        "La clé de votre émetteur est révoquée : il n'est plus reconnu nulle part.",
        "Your emitter's key is revoked: it is no longer recognised anywhere.",
    ),
    "emitter_replaced_msg": (
        "L'ancienne clé est révoquée. Voici la nouvelle :",
        "The old key is revoked. Here is the new one:",
    ),
    "emitter_known": (
        "Votre émetteur est déjà configuré ; il n'y a rien à faire.",
        "Your emitter is already set up; nothing to do.",
    ),
    "receipt_h": ("Reçu de consentement", "Consent receipt"),
    "receipt_id": ("Numéro du reçu", "Receipt number"),
    "receipt_when": ("Date", "Date"),
    "receipt_signed": (
        "Signé (Ed25519, format Kantara v1.1) — vérifiable avec la clé publique :",
        "Signed (Ed25519, Kantara v1.1 format) — verifiable with the public key:",
    ),
    "receipt_json": ("Télécharger le reçu signé (JSON)", "Download the signed receipt (JSON)"),
    "my_space": (
        "Mon espace : accords, historique, export, effacement",
        "My space: consents, history, export, erasure",
    ),
    "dash_h": ("Mes accords", "My consents"),
    "dash_none": ("Aucun accord en cours.", "No consent in force."),
    "where_all": ("tous les commerçants partenaires", "all affiliated merchants"),
    "c_where": ("Détection", "Detection"),
    "c_share": ("Partage", "Sharing"),
    "c_stats": ("Statistiques", "Statistics"),
    "c_until": ("Jusqu'à", "Until"),
    "c_until_withdrawn": ("retrait", "withdrawal"),
    "c_status": ("État", "Status"),
    "st_active": ("en cours", "in force"),
    "st_withdrawn": ("retiré", "withdrawn"),
    "st_expired": ("expiré", "expired"),
    "withdraw_btn": ("Retirer", "Withdraw"),
    "withdraw_all_btn": ("Tout retirer", "Withdraw everything"),
    "withdrawn_msg": (
        "Retiré. Plus aucun appareil ne reçoit vos données au titre de cet accord.",
        "Withdrawn. No device receives your data under this consent any more.",
    ),
    "history_h": ("Historique des divulgations", "Disclosure history"),
    "history_help": (
        "Chaque envoi à un appareil de commerçant, et chaque arrêt.",
        "Every sending to a merchant device, and every stop.",
    ),
    "history_none": ("Rien n'a encore été envoyé.", "Nothing has been sent yet."),
    "h_when": ("Quand", "When"),
    "h_merchant": ("Commerçant", "Merchant"),
    "h_device": ("Appareil", "Device"),
    "h_what": ("Quoi", "What"),
    "act_push": ("envoi", "sent"),
    "act_revoke": ("arrêt", "stopped"),
    # Why a device was told to stop (the revoke's reason, as the audit log records it).
    "why_absent": ("vous êtes parti·e", "you left"),
    "why_moved": ("vous avez changé de zone", "you moved to another zone"),
    "why_scanner_silent": (
        "le capteur de la zone s'est tu",
        "the zone's scanner went silent",
    ),
    "why_withdrawn": ("vous avez retiré votre accord", "you withdrew your consent"),
    "why_expired": ("votre accord a pris fin", "your consent ended"),
    "why_erased": ("vos données ont été effacées", "your data was erased"),
    "why_key_revoked": ("votre émetteur a été révoqué", "your emitter was revoked"),
    "why_consent_changed": ("votre accord a changé", "your consent changed"),
    "area_h": ("Mon quartier (statistiques)", "My area (statistics)"),
    "area_btn": ("Changer", "Change"),
    "area_saved": ("Quartier enregistré.", "Area saved."),
    "area_needs_stats": (
        "Vous n'avez pas d'accord statistiques en cours : nous ne gardons pas votre quartier.",
        "You have no statistics consent in force: we do not keep your area.",
    ),
    "export_h": ("Mes données", "My data"),
    "export_btn": ("Télécharger toutes mes données (JSON)", "Download all my data (JSON)"),
    "erase_h": ("Effacer toutes mes données", "Erase all my data"),
    "erase_help": (
        "Supprime votre profil, vos accords, vos visites et l'historique, partout, immédiatement. Irréversible.",
        "Deletes your profile, consents, visits and history, everywhere, at once. Cannot be undone.",
    ),
    "erase_confirm": ("Je confirme vouloir tout effacer", "I confirm I want to erase everything"),
    "erase_btn": ("Tout effacer", "Erase everything"),
    "erase_need_confirm": (
        "Cochez la case de confirmation pour effacer.",
        "Tick the confirmation box to erase.",
    ),
    "erased_h": ("Vos données sont effacées", "Your data is erased"),
    "erased": (
        "Il ne reste qu'une mention anonyme qu'un effacement a eu lieu.",
        "All that remains is an anonymous note that an erasure took place.",
    ),
    "no_data": ("Nous ne détenons aucune donnée à votre sujet.", "We hold no data about you."),
    "not_found_h": ("Introuvable", "Not found"),
    "not_found": (
        "Cette page n'existe pas ou ne vous concerne pas.",
        "This page does not exist or is not yours.",
    ),
    "bad_request_h": ("Requête refusée", "Request refused"),
    "verify_h": ("Vérifier un reçu", "Verify a receipt"),
    "verify_help": (
        "Collez un reçu signé (texte JWS) pour savoir s'il a été émis ici et n'a pas été modifié.",
        "Paste a signed receipt (JWS text) to know whether it was issued here and not altered.",
    ),
    "verify_btn": ("Vérifier", "Verify"),
    "verify_valid": (
        "Valide : signé par ce serveur, non modifié.",
        "Valid: signed by this server, not altered.",
    ),
    "verify_invalid": ("Non valide : {reason}", "Not valid: {reason}"),
    "verify_on_record": (
        "L'accord correspondant est enregistré, état : {status}.",
        "The matching consent is on record, status: {status}.",
    ),
    "verify_not_on_record": (
        "L'accord correspondant n'est plus enregistré (effacé ou purgé).",
        "The matching consent is no longer on record (erased or purged).",
    ),
}


def translate(lang: str, key: str, **kw: object) -> str:
    """The text for a key in a language (fr or en), with {placeholders} filled."""
    fr, en = TEXTS[key]
    text = en if lang == "en" else fr
    return text.format(**kw) if kw else text
