"""The portal's strings in English and French: one catalogue, one lookup, no build step."""

from __future__ import annotations

from flask import request, session

LANGUAGES = ("en", "fr")
DEFAULT = "en"

CATALOGUE: dict[str, dict[str, str]] = {
    "en": {
        "app_name": "Collective Mood",
        "skip_to_content": "Skip to content",
        "nav_venues": "Venues",
        "nav_reports": "Reports",
        "nav_logout": "Sign out",
        "language": "Language",
        "login_title": "Sign in to your merchant portal",
        "email": "Email",
        "password": "Password",
        "sign_in": "Sign in",
        "login_failed": "Email or password is incorrect.",
        "login_throttled": "Too many failed attempts. Wait a few minutes, then try again.",
        "logged_out": "You are signed out.",
        "no_merchant": "This account is not attached to a merchant.",
        "merchant_suspended": "Your affiliation is suspended: contact the programme to restore it.",
        "venues_title": "Your venues",
        "venue_site": "Site",
        "venue_vehicle": "Vehicle",
        "open_live": "Live",
        "open_qr": "Opt-in QR",
        "open_devices": "Devices & scanners",
        "open_setup": "Setup",
        "live_title": "Live — {venue}",
        "live_connected": "Live: updates arrive as they happen.",
        "live_connecting": "Connecting…",
        "live_disconnected": "Connection lost — the list may be out of date. Reconnecting…",
        "live_refused": "Signed out or no access to this venue: sign in again to see it live.",
        "live_empty": "Nobody who opted in is here right now.",
        "live_count": "{n} present",
        "live_playing": "Now playing",
        "live_veto": "Veto",
        "live_skip": "Skip",
        "live_bad_skip": "Nothing to skip there.",
        "live_volume": "Volume capped at {v} %",
        "live_nothing_playing": "Nothing queued: nobody present shares music here.",
        "col_subscriber": "Pseudonym",
        "col_zone": "Zone",
        "col_dwell": "Here for",
        "live_privacy": "Pseudonyms differ for every merchant: they never reveal who a person is.",
        "qr_title": "Opt in — {venue}",
        "qr_headline": "Bring your music here",
        "qr_promise_1": "Scan to let your own playlist or taste play while you are here.",
        "qr_promise_2": "We only see a nickname, never your name.",
        "qr_promise_3": "You choose what is shared, and you can stop at any time.",
        "qr_alt": "QR code linking to the opt-in page",
        "qr_exit": "Back to the portal",
        "devices_title": "Devices & scanners — {venue}",
        "devices_heading": "Playback devices",
        "col_device": "Device",
        "col_status": "Status",
        "col_actions": "Actions",
        "status_paired": "Paired",
        "status_unpaired": "Not paired",
        "status_online": "Online",
        "status_offline": "Offline",
        "status_revoked": "Revoked",
        "no_zone": "no zone",
        "pair": "Pair",
        "revoke": "Revoke",
        "rotate": "Rotate token",
        "pair_code_title": "Pairing code for {device}",
        "pair_code_help": (
            "On the device, open {url} and enter this code within {minutes} minutes. It works once."
        ),
        "token_title": "New token for {device}",
        "token_help": "Shown once: copy it into the device's configuration now.",
        "revoked_done": "{device} is revoked: it receives nothing more.",
        "scanners_heading": "Scanners",
        "col_scanner": "Scanner",
        "col_heartbeat": "Last heartbeat",
        "col_queue": "Queue",
        "col_frames": "Frames heard / dropped",
        "col_adapter": "Adapter",
        "never": "never",
        "seconds_ago": "{s} s ago",
        "silent_warning": "Silent for more than {s} s: check power and network.",
        "never_warning": "Never heard from: check that the daemon is installed and configured.",
        "adapter_down_warning": "Bluetooth adapter down: this scanner hears nobody.",
        "col_drift": "Radio drift since the survey",
        "drift_value": "{db} dB, from {n} visitor(s)",
        "drift_none": "not learnt yet",
        "resurvey_warning": "This scanner reads {db} dB off the survey: walk a new survey.",
        "owner_only": "Only the owner can change devices and setup.",
        "device_title": "Collective Mood device",
        "device_pair_heading": "Pair this device",
        "device_code": "Pairing code",
        "device_pair_button": "Pair",
        "device_pair_failed": "This code is wrong or has expired. Ask for a new one.",
        "device_waiting": "Paired. Waiting for guests who opted in…",
        "device_revoked": "This device is no longer paired. Ask the owner for a new code.",
        "device_unpair": "Unpair this device",
        "device_present": "Now playing for",
        "device_playlist": "Playlist",
        "device_preferences": "Preferences",
        "device_zone": "Zone: {zone}",
        "device_mood_is": "Mood: {mood}",
        "setup_title": "Setup — {venue}",
        "setup_plan": "Floor plan",
        "setup_plan_desc": "Zones and scanners of {venue}, in metres.",
        "setup_no_zones": "No zones yet: upload a GeoJSON file below.",
        "setup_upload": "Upload zones (GeoJSON)",
        "setup_upload_help": (
            "A FeatureCollection of Polygons in the venue's frame, in metres; each feature has "
            'properties "name" and "kind" (chair, cabin or area). It replaces the zones.'
        ),
        "setup_file": "GeoJSON file",
        "setup_submit": "Upload",
        "setup_saved": "{n} zones saved.",
        "setup_scanner_move": "Place a scanner",
        "setup_scanner_saved": "{scanner} placed at ({x}, {y}).",
        "setup_x": "x (m)",
        "setup_y": "y (m)",
        "save": "Save",
        "reports_title": "Reports",
        "reports_empty": (
            "No report has been published yet. Catchment and taste reports appear here once "
            "enough visitors have consented to anonymous statistics; every cell covers at least "
            "k people."
        ),
        "geo_not_json": "The file is not valid JSON.",
        "geo_not_collection": "The file must be a GeoJSON FeatureCollection.",
        "geo_no_features": "The FeatureCollection has no features.",
        "geo_too_many": "At most {n} zones per venue.",
        "geo_not_feature": "Item {i} is not a GeoJSON Feature.",
        "geo_bad_name": 'Feature {i} needs a "name" property of 1 to {n} characters.',
        "geo_duplicate": 'Feature {i}: the name "{name}" is used twice.',
        "geo_bad_kind": 'Zone "{name}" (feature {i}): kind must be one of {kinds}.',
        "geo_not_polygon": 'Zone "{name}" (feature {i}) must be a Polygon.',
        "geo_bad_coordinates": 'Zone "{name}" (feature {i}) has unreadable coordinates.',
        "geo_far": 'Zone "{name}" (feature {i}) reaches {m} m or more from the plan\'s origin: '
        "coordinates are metres in the venue's own frame.",
        "geo_empty": 'Zone "{name}" (feature {i}) has no area.',
        "geo_invalid": 'Zone "{name}" (feature {i}) is not a valid polygon: {why}.',
        "geo_db": "The zones could not be saved: {why}.",
        "rep_k": "Every published row and area covers at least k = {k} subscribers.",
        "rep_exact": "No noise was added: areas that are too small are merged or left out.",
        "rep_noise": (
            "Calibrated noise was added ({mechanism}, ε = {epsilon}, δ = {delta}): the numbers "
            "are approximate."
        ),
        "rep_threshold": "Rows under {threshold} (noisy) people are withheld.",
        "rep_week": "Week of {start}",
        "rep_map": "Catchment area",
        "rep_map_desc": (
            "Home areas of visitors: filled areas form the catchment ({share} % of the visits "
            "from published areas)."
        ),
        "rep_taste": "Tastes by home area",
        "rep_area": "Area",
        "rep_people": "Subscribers",
        "rep_top": "Top genres",
        "rep_suggestions": "Programming suggestions",
        "rep_csv": "Download CSV",
        "rep_print": "Print",
        "rep_all_areas": "other areas",
        "rep_all_suppressed": (
            "Fewer than k = {k} subscribers could be grouped this week: every row was withheld."
        ),
        "rep_suppressed": "{n} subscribers were left out: their areas could not reach k.",
        "rep_suppressed_none": "No subscriber was left out.",
        "rep_suppressed_below_k": (
            "Some subscribers were left out; fewer than k = {k}, so their number is withheld too."
        ),
        "rep_suppressed_noisy": (
            "Areas under the threshold were left out; how many people they held is not stated."
        ),
        "rep_suppressed_visits": "{n} visits from areas under k are not in the catchment.",
        "rep_suppressed_visits_hidden": (
            "Visits from areas under k are not in the catchment; fewer than k = {k} people made "
            "them, so their number is withheld."
        ),
        "rep_pages": "Older and newer reports",
        "rep_newer": "Newer reports",
        "rep_older": "Older reports",
        "rep_page": "Page {page} of {pages}",
        "rules_heading": "Playback rules",
        "rules_help": "They apply to every venue and take effect at the next arrival or departure.",
        "rules_explicit": "Allow explicit tracks",
        "rules_volume": "Volume cap (0–100, empty for none)",
        "rules_veto": "Vetoed tracks (ids, one per line)",
        "rules_saved": "Playback rules saved.",
        "rules_bad_volume": "The volume cap must be a whole number from 0 to 100.",
        "rules_bad_track": '"{track}" is not a track id.',
        "rules_too_many": "At most {n} vetoed tracks.",
        "device_queue": "Now playing",
        "device_volume": "Volume capped at {v} %",
        "device_by": "for {who}",
        "survey_heading": "Site survey",
        "survey_help": (
            "A CSV of readings taken while walking the venue at known positions: columns ts, "
            "scanner, emitter, rssi, x, y (metres, the venue's frame). You see how often the zone "
            "would be right before applying it."
        ),
        "survey_file": "Survey CSV",
        "survey_apply": "Apply as this venue's calibration",
        "survey_submit": "Score the survey",
        "survey_result": "Survey result",
        "survey_overall": (
            "Right zone {accuracy} % of the time; median error {median} m, 90 % within {p90} m; "
            "{flaps} zone changes a minute, over {scored} scored seconds in {tracks} tracks."
        ),
        "survey_zone_accuracy": "Zone right",
        "survey_seconds": "Seconds",
        "survey_covered": "Walked near",
        "survey_gap": "Furthest from the walk",
        "survey_gap_at": "{m} m, at ({x}, {y})",
        "survey_coverage_help": (
            "Walked near: the share of the zone within 1.5 m of where the survey went. Further "
            "out the radio map is only extrapolated and people are placed worse: walk there "
            "next, starting at the spot furthest from the walk."
        ),
        "survey_applied": "Calibration applied: live positioning uses it from now on.",
        "survey_not_applied": "Not applied: tick the box and upload again to use it.",
        "survey_bad_file": "The survey cannot be read: {why}.",
        "survey_empty": "Choose a survey file with at least one reading.",
        "survey_no_zones": "Add zones first: a survey is scored against them.",
        "survey_unknown_scanners": "The survey names scanners this venue does not have: {names}.",
        "survey_too_short": "The survey is too short to measure anything: walk every zone.",
        "calibrated": "Calibrated from a site survey.",
        "uncalibrated": "Not calibrated yet: positioning uses textbook radio defaults.",
        "too_large": "The file is too large.",
        "nav_operator": "Programme",
        "op_title": "Programme console",
        "op_counts_only": "Counts only: no subscriber is ever shown or named here.",
        "op_merchants": "Affiliated merchants",
        "col_merchant": "Merchant",
        "col_kind": "Kind",
        "col_venues": "Venues",
        "col_devices": "Paired devices",
        "col_scanners": "Scanners (silent)",
        "status_active": "Active",
        "status_suspended": "Suspended",
        "op_suspend": "Suspend",
        "op_affiliate": "Reactivate",
        "op_onboard": "Onboard a merchant",
        "op_slug": "Short id (lowercase letters, digits, dashes)",
        "op_name": "Business name",
        "op_kind": "Kind of business",
        "op_owner_email": "Owner's email",
        "op_create": "Create and invite",
        "op_bad_slug": "The short id must be 2 to 63 lowercase letters, digits or dashes.",
        "op_bad_name": "The business name must be 1 to 200 characters.",
        "op_bad_kind": "Choose a kind of business from the list.",
        "op_bad_email": "The owner's email does not look like an email address.",
        "op_taken": "That short id or email is already in use.",
        "op_invite_title": "{name} is onboarded",
        "op_invite_help": (
            "Send this link to {email}: it lets them choose a password, works once and expires "
            "in 7 days. It is shown only now."
        ),
        "op_status_active": "{name} is active again.",
        "op_status_suspended": "{name} is suspended: its devices are cut off.",
        "op_invite_dead": "This invitation has expired or was already used.",
        "op_bad_password": "Choose a password of at least {n} characters, typed twice alike.",
        "op_password_set": "Your password is set: sign in now.",
        "invite_title": "Choose your password",
        "invite_confirm": "Password again",
        "error_title": "Something is not right",
        "not_found": "This page does not exist or is not yours.",
        "forbidden": "You are not allowed to do this.",
        "bad_request": "The form has expired or is invalid. Go back and try again.",
    },
    "fr": {
        "app_name": "Collective Mood",
        "skip_to_content": "Aller au contenu",
        "nav_venues": "Lieux",
        "nav_reports": "Rapports",
        "nav_logout": "Se déconnecter",
        "language": "Langue",
        "login_title": "Connexion à votre portail commerçant",
        "email": "E-mail",
        "password": "Mot de passe",
        "sign_in": "Se connecter",
        "login_failed": "E-mail ou mot de passe incorrect.",
        "login_throttled": "Trop d'essais manqués. Patientez quelques minutes puis réessayez.",
        "logged_out": "Vous êtes déconnecté.",
        "no_merchant": "Ce compte n'est rattaché à aucun commerçant.",
        "merchant_suspended": "Votre affiliation est suspendue : contactez le programme.",
        "venues_title": "Vos lieux",
        "venue_site": "Lieu",
        "venue_vehicle": "Véhicule",
        "open_live": "En direct",
        "open_qr": "QR d'inscription",
        "open_devices": "Appareils et capteurs",
        "open_setup": "Configuration",
        "live_title": "En direct — {venue}",
        "live_connected": "En direct : les changements arrivent dès qu'ils ont lieu.",
        "live_connecting": "Connexion…",
        "live_disconnected": (
            "Connexion perdue — la liste n'est peut-être plus à jour. Reconnexion…"
        ),
        "live_refused": "Session terminée ou accès refusé : reconnectez-vous pour suivre ce lieu.",
        "live_empty": "Aucune personne inscrite n'est présente pour l'instant.",
        "live_count": "{n} présent(s)",
        "live_playing": "En cours de lecture",
        "live_veto": "Refuser",
        "live_skip": "Passer",
        "live_bad_skip": "Rien à passer ici.",
        "live_volume": "Volume limité à {v} %",
        "live_nothing_playing": "Rien en attente : personne ici ne partage de musique.",
        "col_subscriber": "Pseudonyme",
        "col_zone": "Zone",
        "col_dwell": "Présent depuis",
        "live_privacy": (
            "Les pseudonymes diffèrent pour chaque commerçant : ils ne révèlent jamais qui est "
            "la personne."
        ),
        "qr_title": "Inscription — {venue}",
        "qr_headline": "Votre musique, ici",
        "qr_promise_1": (
            "Scannez pour faire jouer votre playlist ou vos goûts pendant votre visite."
        ),
        "qr_promise_2": "Nous ne voyons qu'un pseudonyme, jamais votre nom.",
        "qr_promise_3": "Vous choisissez ce qui est partagé et pouvez arrêter à tout moment.",
        "qr_alt": "QR code menant à la page d'inscription",
        "qr_exit": "Retour au portail",
        "devices_title": "Appareils et capteurs — {venue}",
        "devices_heading": "Appareils de diffusion",
        "col_device": "Appareil",
        "col_status": "État",
        "col_actions": "Actions",
        "status_paired": "Appairé",
        "status_unpaired": "Non appairé",
        "status_online": "En ligne",
        "status_offline": "Hors ligne",
        "status_revoked": "Révoqué",
        "no_zone": "aucune zone",
        "pair": "Appairer",
        "revoke": "Révoquer",
        "rotate": "Renouveler le jeton",
        "pair_code_title": "Code d'appairage pour {device}",
        "pair_code_help": (
            "Sur l'appareil, ouvrez {url} et saisissez ce code dans les {minutes} minutes. "
            "Il ne sert qu'une fois."
        ),
        "token_title": "Nouveau jeton pour {device}",
        "token_help": "Affiché une seule fois : copiez-le maintenant dans la configuration.",
        "revoked_done": "{device} est révoqué : il ne reçoit plus rien.",
        "scanners_heading": "Capteurs",
        "col_scanner": "Capteur",
        "col_heartbeat": "Dernier signal",
        "col_queue": "File d'attente",
        "col_frames": "Trames reçues / écartées",
        "col_adapter": "Adaptateur",
        "never": "jamais",
        "seconds_ago": "il y a {s} s",
        "silent_warning": "Muet depuis plus de {s} s : vérifiez l'alimentation et le réseau.",
        "never_warning": "Aucun signal reçu : vérifiez que le service est installé et configuré.",
        "adapter_down_warning": "Adaptateur Bluetooth hors service : ce capteur n'entend personne.",
        "col_drift": "Dérive radio depuis le relevé",
        "drift_value": "{db} dB, d'après {n} visiteur(s)",
        "drift_none": "pas encore apprise",
        "resurvey_warning": "Ce capteur s'écarte de {db} dB du relevé : refaites un relevé.",
        "owner_only": "Seul le propriétaire peut modifier les appareils et la configuration.",
        "device_title": "Appareil Collective Mood",
        "device_pair_heading": "Appairer cet appareil",
        "device_code": "Code d'appairage",
        "device_pair_button": "Appairer",
        "device_pair_failed": "Ce code est faux ou a expiré. Demandez-en un nouveau.",
        "device_waiting": "Appairé. En attente de clients inscrits…",
        "device_revoked": "Cet appareil n'est plus appairé. Demandez un nouveau code.",
        "device_unpair": "Désappairer cet appareil",
        "device_present": "En cours pour",
        "device_playlist": "Playlist",
        "device_preferences": "Préférences",
        "device_zone": "Zone : {zone}",
        "device_mood_is": "Ambiance : {mood}",
        "setup_title": "Configuration — {venue}",
        "setup_plan": "Plan",
        "setup_plan_desc": "Zones et capteurs de {venue}, en mètres.",
        "setup_no_zones": "Aucune zone : importez un fichier GeoJSON ci-dessous.",
        "setup_upload": "Importer les zones (GeoJSON)",
        "setup_upload_help": (
            "Une FeatureCollection de Polygons dans le repère du lieu, en mètres ; chaque objet "
            "a les propriétés « name » et « kind » (chair, cabin ou area). Elle remplace les zones."
        ),
        "setup_file": "Fichier GeoJSON",
        "setup_submit": "Importer",
        "setup_saved": "{n} zones enregistrées.",
        "setup_scanner_move": "Placer un capteur",
        "setup_scanner_saved": "{scanner} placé en ({x}, {y}).",
        "setup_x": "x (m)",
        "setup_y": "y (m)",
        "save": "Enregistrer",
        "reports_title": "Rapports",
        "reports_empty": (
            "Aucun rapport publié pour l'instant. Les rapports de zone de chalandise et de goûts "
            "apparaîtront ici quand assez de visiteurs auront accepté les statistiques anonymes ; "
            "chaque case couvre au moins k personnes."
        ),
        "geo_not_json": "Le fichier n'est pas du JSON valide.",
        "geo_not_collection": "Le fichier doit être une FeatureCollection GeoJSON.",
        "geo_no_features": "La FeatureCollection ne contient aucun objet.",
        "geo_too_many": "Au plus {n} zones par lieu.",
        "geo_not_feature": "L'élément {i} n'est pas une Feature GeoJSON.",
        "geo_bad_name": "L'objet {i} doit avoir une propriété « name » de 1 à {n} caractères.",
        "geo_duplicate": "Objet {i} : le nom « {name} » est utilisé deux fois.",
        "geo_bad_kind": "Zone « {name} » (objet {i}) : kind doit valoir {kinds}.",
        "geo_not_polygon": "La zone « {name} » (objet {i}) doit être un Polygon.",
        "geo_bad_coordinates": "La zone « {name} » (objet {i}) a des coordonnées illisibles.",
        "geo_far": "La zone « {name} » (objet {i}) s'étend à {m} m ou plus de l'origine du plan : "
        "les coordonnées sont des mètres dans le repère du lieu.",
        "geo_empty": "La zone « {name} » (objet {i}) n'a pas de surface.",
        "geo_invalid": "La zone « {name} » (objet {i}) n'est pas un polygone valide : {why}.",
        "geo_db": "Les zones n'ont pas pu être enregistrées : {why}.",
        "rep_k": "Chaque ligne et chaque zone publiées regroupent au moins k = {k} abonnés.",
        "rep_exact": "Aucun bruit ajouté : les zones trop petites sont regroupées ou omises.",
        "rep_noise": (
            "Du bruit calibré a été ajouté ({mechanism}, ε = {epsilon}, δ = {delta}) : les "
            "nombres sont approchés."
        ),
        "rep_threshold": "Les lignes sous {threshold} personnes (bruitées) sont omises.",
        "rep_week": "Semaine du {start}",
        "rep_map": "Zone de chalandise",
        "rep_map_desc": (
            "Lieux de résidence des visiteurs : les zones pleines forment la zone de chalandise "
            "({share} % des visites venant des zones publiées)."
        ),
        "rep_taste": "Goûts par lieu de résidence",
        "rep_area": "Zone",
        "rep_people": "Abonnés",
        "rep_top": "Genres préférés",
        "rep_suggestions": "Suggestions de programmation",
        "rep_csv": "Télécharger le CSV",
        "rep_print": "Imprimer",
        "rep_all_areas": "autres zones",
        "rep_all_suppressed": (
            "Moins de k = {k} abonnés ont pu être regroupés cette semaine : toutes les lignes "
            "sont omises."
        ),
        "rep_suppressed": "{n} abonnés sont omis : leurs zones n'atteignaient pas k.",
        "rep_suppressed_none": "Aucun abonné n'est omis.",
        "rep_suppressed_below_k": (
            "Des abonnés sont omis ; moins de k = {k}, donc leur nombre est omis aussi."
        ),
        "rep_suppressed_noisy": (
            "Les zones sous le seuil sont omises ; le nombre de personnes concernées n'est pas "
            "indiqué."
        ),
        "rep_suppressed_visits": (
            "{n} visites venant de zones sous k ne comptent pas dans la zone de chalandise."
        ),
        "rep_suppressed_visits_hidden": (
            "Les visites venant de zones sous k ne comptent pas dans la zone de chalandise ; "
            "moins de k = {k} personnes les ont faites, donc leur nombre est omis."
        ),
        "rep_pages": "Rapports plus anciens et plus récents",
        "rep_newer": "Rapports plus récents",
        "rep_older": "Rapports plus anciens",
        "rep_page": "Page {page} sur {pages}",
        "rules_heading": "Règles de diffusion",
        "rules_help": (
            "Elles valent pour tous vos lieux, dès la prochaine arrivée ou le prochain départ."
        ),
        "rules_explicit": "Autoriser les titres explicites",
        "rules_volume": "Volume maximal (0–100, vide pour aucun)",
        "rules_veto": "Titres refusés (identifiants, un par ligne)",
        "rules_saved": "Règles de diffusion enregistrées.",
        "rules_bad_volume": "Le volume maximal doit être un entier de 0 à 100.",
        "rules_bad_track": "« {track} » n'est pas un identifiant de titre.",
        "rules_too_many": "Au plus {n} titres refusés.",
        "device_queue": "En cours",
        "device_volume": "Volume limité à {v} %",
        "device_by": "pour {who}",
        "survey_heading": "Relevé sur site",
        "survey_help": (
            "Un CSV de mesures prises en parcourant le lieu à des positions connues : colonnes "
            "ts, scanner, emitter, rssi, x, y (mètres, repère du lieu). Vous voyez la justesse "
            "des zones avant de l'appliquer."
        ),
        "survey_file": "CSV du relevé",
        "survey_apply": "L'appliquer comme calibration du lieu",
        "survey_submit": "Évaluer le relevé",
        "survey_result": "Résultat du relevé",
        "survey_overall": (
            "Bonne zone {accuracy} % du temps ; erreur médiane {median} m, 90 % à moins de "
            "{p90} m ; {flaps} changements de zone par minute, sur {scored} secondes évaluées en "
            "{tracks} parcours."
        ),
        "survey_zone_accuracy": "Bonne zone",
        "survey_seconds": "Secondes",
        "survey_covered": "Parcourue",
        "survey_gap": "Le plus loin du parcours",
        "survey_gap_at": "{m} m, en ({x}, {y})",
        "survey_coverage_help": (
            "Parcourue : la part de la zone à moins de 1,5 m du parcours du relevé. Au-delà, la "
            "carte radio n'est qu'extrapolée et les personnes sont moins bien placées : "
            "parcourez-la ensuite, en commençant par le point le plus éloigné du parcours."
        ),
        "survey_applied": "Calibration appliquée : le positionnement l'utilise dès maintenant.",
        "survey_not_applied": "Non appliquée : cochez la case et importez à nouveau.",
        "survey_bad_file": "Le relevé est illisible : {why}.",
        "survey_empty": "Choisissez un fichier de relevé contenant au moins une mesure.",
        "survey_no_zones": "Ajoutez d'abord des zones : le relevé est évalué sur elles.",
        "survey_unknown_scanners": "Le relevé cite des capteurs absents de ce lieu : {names}.",
        "survey_too_short": "Le relevé est trop court pour mesurer : parcourez chaque zone.",
        "calibrated": "Calibré à partir d'un relevé sur site.",
        "uncalibrated": "Pas encore calibré : le positionnement utilise des valeurs par défaut.",
        "too_large": "Le fichier est trop volumineux.",
        "nav_operator": "Programme",
        "op_title": "Console du programme",
        "op_counts_only": "Des totaux seulement : aucun abonné n'est jamais montré ni nommé ici.",
        "op_merchants": "Commerçants affiliés",
        "col_merchant": "Commerçant",
        "col_kind": "Type",
        "col_venues": "Lieux",
        "col_devices": "Appareils appairés",
        "col_scanners": "Capteurs (muets)",
        "status_active": "Actif",
        "status_suspended": "Suspendu",
        "op_suspend": "Suspendre",
        "op_affiliate": "Réactiver",
        "op_onboard": "Affilier un commerçant",
        "op_slug": "Identifiant court (minuscules, chiffres, tirets)",
        "op_name": "Nom commercial",
        "op_kind": "Type de commerce",
        "op_owner_email": "E-mail du propriétaire",
        "op_create": "Créer et inviter",
        "op_bad_slug": "L'identifiant court doit faire 2 à 63 minuscules, chiffres ou tirets.",
        "op_bad_name": "Le nom commercial doit faire 1 à 200 caractères.",
        "op_bad_kind": "Choisissez un type de commerce dans la liste.",
        "op_bad_email": "L'e-mail du propriétaire ne ressemble pas à une adresse.",
        "op_taken": "Cet identifiant ou cet e-mail est déjà utilisé.",
        "op_invite_title": "{name} est affilié",
        "op_invite_help": (
            "Envoyez ce lien à {email} : il permet de choisir un mot de passe, sert une fois et "
            "expire dans 7 jours. Il n'est affiché que maintenant."
        ),
        "op_status_active": "{name} est de nouveau actif.",
        "op_status_suspended": "{name} est suspendu : ses appareils sont coupés.",
        "op_invite_dead": "Cette invitation a expiré ou a déjà servi.",
        "op_bad_password": (
            "Choisissez un mot de passe d'au moins {n} caractères, saisi deux fois à l'identique."
        ),
        "op_password_set": "Votre mot de passe est enregistré : connectez-vous.",
        "invite_title": "Choisissez votre mot de passe",
        "invite_confirm": "Mot de passe (confirmation)",
        "error_title": "Quelque chose ne va pas",
        "not_found": "Cette page n'existe pas ou ne vous appartient pas.",
        "forbidden": "Vous n'avez pas le droit de faire cela.",
        "bad_request": "Le formulaire a expiré ou est invalide. Revenez en arrière et réessayez.",
    },
}


def current_language() -> str:
    """The request's language: ?lang=, then the session's choice, then Accept-Language."""
    asked = request.args.get("lang")
    if asked in LANGUAGES:
        session["lang"] = asked
        return asked
    chosen = session.get("lang")
    if chosen in LANGUAGES:
        return chosen
    return request.accept_languages.best_match(LANGUAGES) or DEFAULT


def translate(lang: str, key: str, **values: object) -> str:
    """The string for `key` in `lang` (English if missing), with {placeholders} filled."""
    text = CATALOGUE.get(lang, {}).get(key) or CATALOGUE[DEFAULT][key]
    return text.format(**values) if values else text
